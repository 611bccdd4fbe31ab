"""Training augmentation (the official rotation, flip and scale) and the left/right label swap on horizontal flip."""
from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

from misc.frames import flip_swap_permutation


def build_transform(aug_cfg, image_size_rc, train: bool) -> A.Compose:
    """Rotation, flip, scale, brightness/contrast, resize -- keypoints follow and are never dropped.

    The scale step is followed by the resize to the network size, as in the official pipeline, so it
    changes only the resampling, not the geometry. (The official call passed (0.9, 1.2) as a scale
    *limit*, which albumentations offsets by 1, i.e. 1.9..2.2; here the range means what it says.)
    """
    rows, cols = image_size_rc
    steps = []
    if train and aug_cfg.type == "aug_default":
        low, high = aug_cfg.scale_range
        steps += [
            A.SafeRotate(limit=(-aug_cfg.rotate_limit, aug_cfg.rotate_limit), p=aug_cfg.rotate_p,
                         border_mode=cv2.BORDER_CONSTANT),
            A.HorizontalFlip(p=aug_cfg.flip_p),
            A.RandomScale(scale_limit=(low - 1.0, high - 1.0), p=aug_cfg.scale_p),
            A.RandomBrightnessContrast(),
        ]
    steps.append(A.Resize(rows, cols))
    return A.Compose(steps, keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
                     save_applied_params=True)


SENTINEL_XY = (1.0, 1.0)


def augment(transform: A.Compose, image: np.ndarray, points_xy: np.ndarray, seed: int,
            swap_lr_on_flip: bool) -> tuple[np.ndarray, np.ndarray, bool]:
    """Apply ``transform``; return (image, points_xy, geometry_unchanged).

    ``geometry_unchanged`` follows the official rule: a sentinel point at (1, 1), in the frame of
    the network input, comes out exactly where it went in. On a horizontal flip the corner labels
    are swapped so that point 4v stays the top-LEFT corner (fix of the official defect).
    """
    rows, cols = image.shape[:2]
    out_rows, out_cols = transform.transforms[-1].height, transform.transforms[-1].width
    # the sentinel lives in the output frame, so express it in the input frame
    sentinel_in = [SENTINEL_XY[0] * cols / out_cols, SENTINEL_XY[1] * rows / out_rows]
    transform.set_random_seed(seed)
    result = transform(image=image, keypoints=np.vstack([points_xy, sentinel_in]).astype(np.float32))
    keypoints = np.asarray(result["keypoints"], dtype=np.float64)
    points, sentinel = keypoints[:-1, :2], keypoints[-1, :2]
    flipped = any(name == "HorizontalFlip" for name, _ in result.get("applied_transforms", []))
    if flipped and swap_lr_on_flip:
        points = points[flip_swap_permutation(len(points))]
    unchanged = bool(np.allclose(sentinel, SENTINEL_XY, atol=1e-4, rtol=0))
    return result["image"], points, unchanged


def occlude_band(image: np.ndarray, rng: np.random.Generator, height_range: tuple[float, float]) -> np.ndarray:
    """Copy of ``image`` with one full-width horizontal band set to the image's mean intensity.

    The band height is drawn from ``height_range`` (fractions of the image height) and its position
    uniformly. The vertebrae under it are invisible, so the network can only place them from the
    clicks and the rest of the spine: this gives the click pathway something to learn on training
    images the network already fits (a recipe switch, not part of the paper).
    """
    rows = image.shape[0]
    low, high = height_range
    band = int(round(rng.uniform(min(low, high), max(low, high)) * rows))
    band = min(max(band, 1), rows)
    top = int(rng.integers(0, rows - band + 1))
    out = image.copy()
    out[top:top + band] = np.asarray(image.mean(axis=(0, 1)), dtype=image.dtype)
    return out
