"""The error detector: for an image and its 68 current points, a score per point (the predicted log error).

It looks at the image and the points together, as KeyBot's detector does, and judges vertebrae in
sequence so that a level shift or a run of shifted vertebrae can be seen from the neighbours:

- input: the image (grey, the network's normalisation) and the points drawn as 5 maps on the same
  grid: one Gaussian map per corner type (top-left, top-right, bottom-left, bottom-right) and one map
  whose Gaussians carry the vertebra's level (1/17 .. 17/17), so the network sees where each level sits;
- a small convolutional network to 1/4 of the grid with context from 1/16 (a top-down sum);
- per vertebra, the features sampled at its 4 corners, the corners' offsets from its centre and the
  steps to the neighbouring vertebrae (both in units of the image's median vertebra height), and its
  level's embedding, make one token; three residual 1-D convolutions (dilations 1, 2, 4) over the 17
  tokens; a linear head gives the 4 corners' scores;
- with ``heatmap_patch`` P > 0 each token also holds what the interactive model itself says around its
  4 corners: a P x P patch (stride 4 grid px) of each corner's own heatmap, max-pooled 4 x 4, centred on
  the corner (the peak under a predicted point, a second mode a level away, nothing under a misplaced
  point).

Scores are trained to be log(1 + error / 2 px on the grid) (engine/detector_training.py), so higher is
more likely wrong and the scale means something; only their order is used to flag points.
"""
from __future__ import annotations

import io
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from misc.errors import BadInput
from misc.heatmaps import gaussian_heatmaps
from misc.shape_model import ShapeModel
from util import atomic_write_bytes

POINTS_PER_VERTEBRA = 4
FORMAT = "error-detector-1"

__all__ = ["ErrorDetector", "pool_heatmaps", "vertebra_geometry", "detector_checkpoint_bytes",
           "load_detector_checkpoint", "update_settings", "shape_model_to_entries", "shape_model_from_entries"]


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels),
                                  nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(channels))

    def forward(self, x):
        return F.relu(x + self.body(x))


class _SequenceBlock(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.norm = nn.GroupNorm(1, channels)

    def forward(self, x):
        return x + F.gelu(self.norm(self.conv(x)))


def vertebra_geometry(points_rc: torch.Tensor) -> torch.Tensor:
    """(B, K, 2) grid points -> (B, V, 14) per vertebra: its corners' offsets from its centre (8), the
    steps from the previous and to the next vertebra's centre (4, zero at the ends), all divided by the
    image's median vertebra height, and its centre's place in the spine's bounding box (2)."""
    b = points_rc.shape[0]
    corners = points_rc.reshape(b, -1, POINTS_PER_VERTEBRA, 2)
    centre = corners.mean(2)
    height = (corners[:, :, 2:, 0].mean(2) - corners[:, :, :2, 0].mean(2)).abs()
    scale = height.median(1).values.clamp_min(1.0)[:, None, None]
    offsets = (corners - centre[:, :, None]).flatten(2) / scale
    step = (centre[:, 1:] - centre[:, :-1]) / scale
    zero = torch.zeros_like(step[:, :1])
    previous, following = torch.cat([zero, step], 1), torch.cat([step, zero], 1)
    low, high = centre.amin(1, keepdim=True), centre.amax(1, keepdim=True)
    place = (centre - low) / (high - low).clamp_min(1.0)
    return torch.cat([offsets, previous, following, place], -1)


class ErrorDetector(nn.Module):
    def __init__(self, size_rc: tuple[int, int], num_keypoints: int = 68, width: int = 32, token: int = 96,
                 point_std: float = 1.5, heatmap_patch: int = 0):
        super().__init__()
        if num_keypoints % POINTS_PER_VERTEBRA:
            raise ValueError(f"num_keypoints must be a multiple of {POINTS_PER_VERTEBRA}, got {num_keypoints}")
        self.size_rc = tuple(int(v) for v in size_rc)
        self.num_keypoints, self.point_std = int(num_keypoints), float(point_std)
        self.num_vertebrae = self.num_keypoints // POINTS_PER_VERTEBRA
        self.heatmap_patch = int(heatmap_patch)
        self.settings = {"size_rc": list(self.size_rc), "num_keypoints": self.num_keypoints, "width": width,
                         "token": token, "point_std": self.point_std, "heatmap_patch": self.heatmap_patch}
        w = width
        self.stem = nn.Sequential(_conv(1 + POINTS_PER_VERTEBRA + 1, w, 2), _conv(w, 2 * w, 2), _Residual(2 * w))
        self.down8 = nn.Sequential(_conv(2 * w, 3 * w, 2), _Residual(3 * w))
        self.down16 = nn.Sequential(_conv(3 * w, 4 * w, 2), _Residual(4 * w), _Residual(4 * w))
        self.lateral16 = nn.Conv2d(4 * w, 2 * w, 1)
        self.lateral8 = nn.Conv2d(3 * w, 2 * w, 1)
        self.fuse = _conv(2 * w, 2 * w)
        feature = 2 * w
        self.level = nn.Embedding(self.num_vertebrae, 16)
        patch = POINTS_PER_VERTEBRA * self.heatmap_patch ** 2
        self.token = nn.Linear(POINTS_PER_VERTEBRA * feature + 14 + 16 + patch, token)
        self.sequence = nn.Sequential(*[_SequenceBlock(token, d) for d in (1, 2, 4)])
        self.head = nn.Linear(token, POINTS_PER_VERTEBRA)

    def point_maps(self, points_rc: torch.Tensor) -> torch.Tensor:
        """(B, K, 2) -> (B, 5, rows, cols): corner-type maps and the level map."""
        maps = gaussian_heatmaps(points_rc, self.size_rc, self.point_std)  # (B, K, H, W)
        b, k, h, w = maps.shape
        by_vertebra = maps.reshape(b, -1, POINTS_PER_VERTEBRA, h, w)
        corner_maps = by_vertebra.amax(1)
        levels = torch.arange(1, self.num_vertebrae + 1, device=maps.device, dtype=maps.dtype) / self.num_vertebrae
        level_map = (by_vertebra.amax(2) * levels[None, :, None, None]).amax(1, keepdim=True)
        return torch.cat([corner_maps, level_map], 1)

    @property
    def uses_heatmaps(self) -> bool:
        return self.heatmap_patch > 0

    def heatmap_patches(self, pooled: torch.Tensor, points_rc: torch.Tensor) -> torch.Tensor:
        """(B, K, rows/4, cols/4) pooled heatmaps (pool_heatmaps), (B, K, 2) -> (B, K, P * P): each point's
        own heatmap on a P x P grid of stride 4 grid px centred on it (zeros outside the image)."""
        b, k = points_rc.shape[:2]
        rows, cols = self.size_rc
        half = (self.heatmap_patch - 1) / 2
        steps = (torch.arange(self.heatmap_patch, device=points_rc.device, dtype=points_rc.dtype) - half) * 4.0
        r = points_rc[..., 0, None, None] + steps[:, None]  # (B, K, P, 1)
        c = points_rc[..., 1, None, None] + steps[None, :]  # (B, K, 1, P)
        r, c = torch.broadcast_tensors(r, c)
        xy = torch.stack([(c + 0.5) / cols * 2 - 1, (r + 0.5) / rows * 2 - 1], -1)  # (B, K, P, P, 2)
        sampled = F.grid_sample(pooled.reshape(b * k, 1, *pooled.shape[-2:]).float(), xy.reshape(b * k, *xy.shape[2:]),
                                mode="bilinear", padding_mode="zeros", align_corners=False)
        return sampled.reshape(b, k, -1)

    def forward(self, image: torch.Tensor, points_rc: torch.Tensor, pooled: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, rows, cols) network-normalised image, (B, K, 2) grid points [, (B, K, rows/4, cols/4) the
        interactive model's heatmaps max-pooled (pool_heatmaps), needed when heatmap_patch > 0] -> (B, K)."""
        grey = image.mean(1, keepdim=True)
        x = torch.cat([grey, self.point_maps(points_rc)], 1)
        f4 = self.stem(x)
        f8 = self.down8(f4)
        f16 = self.down16(f8)
        top = F.interpolate(self.lateral16(f16), size=f8.shape[-2:], mode="bilinear", align_corners=False)
        top = F.interpolate(top + self.lateral8(f8), size=f4.shape[-2:], mode="bilinear", align_corners=False)
        features = self.fuse(f4 + top)
        # sample at the points: grid_sample wants (x, y) in [-1, 1] with pixel centres (align_corners=False)
        rows, cols = self.size_rc
        xy = torch.stack([(points_rc[..., 1] + 0.5) / cols * 2 - 1, (points_rc[..., 0] + 0.5) / rows * 2 - 1], -1)
        sampled = F.grid_sample(features, xy[:, :, None], mode="bilinear", align_corners=False)[..., 0]  # (B, C, K)
        b = points_rc.shape[0]
        per_vertebra = sampled.transpose(1, 2).reshape(b, self.num_vertebrae, -1)
        levels = self.level.weight[None].expand(b, -1, -1)
        parts = [per_vertebra, vertebra_geometry(points_rc), levels]
        if self.uses_heatmaps:
            if pooled is None:
                raise ValueError("this detector reads the interactive model's heatmaps: pass them (pool_heatmaps)")
            parts.append(self.heatmap_patches(pooled, points_rc).reshape(b, self.num_vertebrae, -1))
        tokens = self.token(torch.cat(parts, -1))
        tokens = self.sequence(tokens.transpose(1, 2)).transpose(1, 2)
        return self.head(tokens).reshape(b, self.num_keypoints)

    def scorer(self):
        """``scorer(image, points_rc, probs) -> (B, K)`` in eval mode without gradients (model.auto_revision);
        ``probs``: the interactive model's sigmoid heatmaps (B, K, rows, cols) of the prediction scored."""
        self.eval()

        def score(image, points_rc, probs=None):
            with torch.no_grad():
                pooled = pool_heatmaps(probs) if (self.uses_heatmaps and probs is not None) else None
                return self(image, points_rc, pooled)
        return score


def pool_heatmaps(probs: torch.Tensor) -> torch.Tensor:
    """(B, K, rows, cols) -> (B, K, rows/4, cols/4): the maximum of each 4 x 4 block (keeps every peak)."""
    return F.max_pool2d(probs.float(), 4)


def detector_checkpoint_bytes(detector: ErrorDetector, shape_entries: dict, settings: dict,
                             extra: dict | None = None) -> bytes:
    """A detector checkpoint's bytes (the caller writes them atomically): weights, the detector's constructor
    arguments, the corrector's shape model and the flagging settings."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "detector": detector.settings, "state_dict": detector.state_dict(),
                "shape_model": shape_entries, "settings": dict(settings), **(extra or {})}, buffer)
    return buffer.getvalue()


def load_detector_checkpoint(path: Path):
    """(ErrorDetector in eval mode, ShapeModel, settings) or BadInput naming the file."""
    if not path.is_file():
        raise BadInput(f"error detector '{path}' not found (train one with tools/train_error_detector.py)")
    try:
        entries = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which
        raise BadInput(f"error detector '{path}' cannot be read: {exc}") from None
    if not isinstance(entries, dict) or entries.get("format") != FORMAT:
        raise BadInput(f"'{path}' is not an error detector checkpoint (format {FORMAT})")
    detector = ErrorDetector(**entries["detector"])
    try:
        detector.load_state_dict(entries["state_dict"])
    except RuntimeError as exc:
        raise BadInput(f"error detector '{path}': weights do not fit the stored settings ({exc})") from None
    return detector.eval(), shape_model_from_entries(entries["shape_model"], str(path)), dict(entries["settings"])


def update_settings(path: Path, settings: dict) -> None:
    """Rewrite the flagging settings of a detector checkpoint, atomically; weights and the rest unchanged."""
    load_detector_checkpoint(path)  # refuses what is not a detector checkpoint, naming it
    entries = torch.load(path, map_location="cpu", weights_only=True)
    entries["settings"] = dict(settings)
    buffer = io.BytesIO()
    torch.save(entries, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def shape_model_to_entries(model: ShapeModel) -> dict:
    """Tensors for a checkpoint."""
    return {"mean_real": torch.as_tensor(model.mean.real), "mean_imag": torch.as_tensor(model.mean.imag),
            "components": torch.as_tensor(model.components), "variances": torch.as_tensor(model.variances)}


def shape_model_from_entries(entries: dict, source: str) -> ShapeModel:
    try:
        mean = entries["mean_real"].double().numpy() + 1j * entries["mean_imag"].double().numpy()
        return ShapeModel(mean=mean, components=entries["components"].double().numpy(),
                          variances=entries["variances"].double().numpy())
    except (KeyError, AttributeError) as exc:
        raise BadInput(f"{source}: the shape model entry is incomplete ({exc})") from None
