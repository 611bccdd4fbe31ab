"""The model side of the annotation tool: one network, predictions for given fixed points.

    predictor = KeypointPredictor.from_checkpoint("pretrained/aasce_cpu.pth")
    image_t = predictor.network_image(gray)                      # uint8 (H, W) -> (1, 3, rows, cols)
    first = predictor.predict(image_t, {}, None)                 # no clicks
    second = predictor.predict(image_t, {26: (r, c)}, first.probs)  # point 26 fixed at grid (r, c)

A prediction with fixed points is one step of the evaluation protocol's model revision (SPEC 6,
``misc.revision``): the fixed points are the clicks, given to the network as Gaussian click maps
(``misc.heatmaps``, the training std), and the previous heatmap is the last prediction restricted to
the fixed channels (all channels when the config's ``use_prev_heatmap_only_for_hint_index`` is false).
Coordinates here are (row, col) on the network grid; ``demo.session`` converts to original pixels.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from dataset.preprocess import DEFAULT_SIZE_ROW_COL
from misc.decoding import decode
from misc.heatmaps import gaussian_heatmaps, keep_channels

__all__ = ["Prediction", "KeypointPredictor", "PREPROCESS_SIZE_RC", "default_threads"]

# The training images were first resized to the official preprocessing size (dataset/preprocess.py,
# 512 x 256) and then, by the data pipeline, to the network size; the tool repeats both steps so that
# the network sees the same interpolation as in training.
PREPROCESS_SIZE_RC = tuple(DEFAULT_SIZE_ROW_COL)


def default_threads() -> int:
    """CPU threads for the network: all available cores but one, which stays free for the browser and
    the server (with every core busy, OpenMP's waiting threads make the slowest refinements several
    times slower: on 2 cores under load, 2 threads gave a median of 0.08 s but outliers of 1-4 s,
    1 thread 0.12 s with none above 0.2 s)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


@dataclass
class Prediction:
    """One network prediction on the grid: decoded points, probabilities, peak confidence per point."""

    points_rc: torch.Tensor  # (K, 2) float (row, col), sub-pixel decoding as configured
    probs: torch.Tensor  # (K, rows, cols) sigmoid of the main logits
    confidence: torch.Tensor  # (K,) peak probability of each heatmap


class KeypointPredictor:
    """Owns an eval-mode network and the config facts prediction needs (size, std, decoding).

    Thread-safe: predictions are serialised by a lock (two CPU inferences at once only slow each
    other down).
    """

    def __init__(self, net: torch.nn.Module, config, source: str = "", untrained: bool = False):
        self.net = net.eval()
        self.size_rc = tuple(int(v) for v in config.Dataset.image_size)
        self.num_keypoints = int(config.Dataset.num_keypoint)
        self.heatmap_std = float(config.Dataset.heatmap_std)
        self.subpixel = bool(config.Dataset.subpixel_decoding)
        self.patch_size = int(config.Dataset.subpixel_decoding_patch_size)
        self.prev_only_fixed = bool(config.Model.use_prev_heatmap_only_for_hint_index)
        self.model_name = str(config.Model.NAME)
        self.source = source
        self.untrained = untrained
        self._lock = threading.Lock()

    # ---------------------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path: str | Path, config=None, *, allow_pickle: bool = False,
                        fast: bool = True) -> "KeypointPredictor":
        """Build the network from the checkpoint's stored config (or ``config`` when the file has none,
        e.g. the authors' release), load the weights strictly and fold BatchNorm for speed."""
        from model import build_model, load_weights, prepare_for_inference
        from util import config_from_checkpoint

        path = Path(path)
        config = config_from_checkpoint(path, allow_pickle=allow_pickle) or config
        if config is None:
            raise ValueError(f"{path} holds no config (not one of our checkpoints): pass the config that "
                             f"matches it (command line: --config config/<name>.yaml)")
        config = _without_imagenet(config)
        net = build_model(config)
        load_weights(net, path, allow_pickle=allow_pickle)
        net = prepare_for_inference(net) if fast else net.eval().requires_grad_(False)
        return cls(net, config, source=str(path))

    @classmethod
    def untrained_from_config(cls, config, *, seed: int = 0, fast: bool = True) -> "KeypointPredictor":
        """Random weights (for trying the interface without a trained model; the points mean nothing)."""
        from model import build_model, prepare_for_inference

        torch.manual_seed(seed)
        net = build_model(_without_imagenet(config))
        net = prepare_for_inference(net) if fast else net.eval().requires_grad_(False)
        return cls(net, config, source="untrained (random weights)", untrained=True)

    # ---------------------------------------------------------------------------------------------
    def network_image(self, gray: np.ndarray) -> torch.Tensor:
        """uint8 (H, W) grayscale -> (1, 3, rows, cols) in [-1, 1], resized like the training data."""
        if gray.dtype != np.uint8 or gray.ndim != 2:
            raise ValueError(f"expected a 2-D uint8 grayscale image, got {gray.dtype} {gray.shape}")
        resized = gray
        for rows, cols in (PREPROCESS_SIZE_RC, self.size_rc):
            if resized.shape != (rows, cols):
                resized = cv2.resize(resized, (cols, rows), interpolation=cv2.INTER_LINEAR)
        image = torch.from_numpy(resized).float() / 255.0 * 2 - 1
        return image[None, None].expand(1, 3, *self.size_rc).contiguous()

    def click_maps(self, fixed_rc: dict[int, tuple[float, float]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(click maps (1, K, rows, cols), fixed mask (1, K) bool) for grid positions of fixed points."""
        coords = torch.zeros(1, self.num_keypoints, 2)
        mask = torch.zeros(1, self.num_keypoints, dtype=torch.bool)
        for index, (row, col) in fixed_rc.items():
            coords[0, index] = torch.tensor([float(row), float(col)])
            mask[0, index] = True
        maps = gaussian_heatmaps(coords, self.size_rc, self.heatmap_std) * mask[..., None, None]
        return maps, mask

    def predict(self, image_t: torch.Tensor, fixed_rc: dict[int, tuple[float, float]],
                prev_probs: torch.Tensor | None) -> Prediction:
        """Predict all points given the fixed ones (grid (row, col)) and the last prediction's probs.

        With no fixed point the previous heatmap is zero, as in the first round of the protocol.
        The returned points are the network's decoding for every point; the caller puts the fixed
        points back where the person left them.
        """
        maps, mask = self.click_maps(fixed_rc)
        prev = None
        if fixed_rc and prev_probs is not None:
            prev = prev_probs.float()[None]
            if self.prev_only_fixed:
                prev = keep_channels(prev, mask)
        with self._lock, torch.inference_mode():
            probs = torch.sigmoid(self.net.predict(image_t, maps, prev))
        points = decode(probs, self.subpixel, self.patch_size)[0]
        return Prediction(points_rc=points, probs=probs[0], confidence=probs[0].amax(dim=(-2, -1)))

    def warm_up(self) -> None:
        """One throw-away prediction: the first call of a fresh network is several times slower."""
        image = torch.zeros(1, 3, *self.size_rc)
        first = self.predict(image, {}, None)
        self.predict(image, {0: (self.size_rc[0] / 2, self.size_rc[1] / 2)}, first.probs)


def _without_imagenet(config):
    """A copy of the config that does not try to load ImageNet weights (the checkpoint replaces them)."""
    config = config.copy()
    config.Model = config.Model.copy()
    config.Model.imagenet_pretrained = ""
    return config
