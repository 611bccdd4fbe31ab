"""The model side of the annotation tool: one network, predictions for given fixed points.

    predictor = KeypointPredictor.from_checkpoint("pretrained/aasce_cpu.pth")
    image_t = predictor.network_image(gray)                      # uint8 (H, W) -> (1, 3, rows, cols)
    first = predictor.predict(image_t, {}, None)                 # no clicks
    second = predictor.predict(image_t, {26: (r, c)}, first.probs)  # point 26 fixed at grid (r, c)

A prediction with fixed points is one step of the evaluation protocol's model revision
(``engine.revision``), made by the same ``model.predictor.Predictor``: the fixed points are the clicks
(Gaussian click maps, the training std) and the previous heatmap follows the config's
``Model.prev_heatmap`` rule. Coordinates here are (row, col) on the network grid; ``misc.frames``
(``original_xy_to_grid_rc`` / ``grid_rc_to_original_xy``) converts them to original pixels.
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
from model.predictor import NonFinitePrediction, Predictor, check_finite, without_imagenet

__all__ = ["Prediction", "KeypointPredictor", "PREPROCESS_SIZE_RC", "default_threads", "NonFinitePrediction"]

# The training images were first resized to the official preprocessing size (dataset/preprocess.py,
# 512 x 256) and then, by the data pipeline, to the network size; the tool repeats both steps so that
# the network sees the same interpolation as in training.
PREPROCESS_SIZE_RC = tuple(DEFAULT_SIZE_ROW_COL)


def default_threads(backend: str = "torch") -> int:
    """CPU threads for the network. PyTorch: all available cores but one, which stays free for the
    browser and the server (with every core busy, OpenMP's waiting threads made the slowest refinements
    several times slower: on 2 cores under load, 2 threads gave a median of 0.08 s but outliers of 1-4 s,
    1 thread 0.12 s with none above 0.2 s). ONNX Runtime ("onnx"): all cores, its waiting threads
    sleeping instead of spinning (demo.onnx_backend); on 2 cores that took the idle median from 0.157 s to
    0.118 s and cost about 6 % under full load (README "Benchmarks")."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return cores if backend == "onnx" else max(1, cores - 1)


@dataclass
class Prediction:
    """One network prediction on the grid: decoded points, probabilities, peak confidence per point."""

    points_rc: torch.Tensor  # (K, 2) float (row, col), sub-pixel decoding as configured
    probs: torch.Tensor  # (K, rows, cols) sigmoid of the main logits
    confidence: torch.Tensor  # (K,) peak probability of each heatmap


class KeypointPredictor:
    """The demo's view of the shared ``Predictor``: one image at a time, fixed points as a dict.

    Thread-safe: predictions are serialised by a lock (two CPU inferences at once only slow each
    other down).
    """

    def __init__(self, core, config, source: str = "", untrained: bool = False):
        """``core``: a ``model.predictor.Predictor``, or an eval-mode network to wrap in one."""
        self.core = core if isinstance(core, Predictor) else Predictor(core.eval(), config)
        self.size_rc = self.core.size_rc
        self.num_keypoints = int(config.Dataset.num_keypoint)
        self.model_name = str(config.Model.NAME)
        self.source = source
        self.untrained = untrained
        self._lock = threading.Lock()

    @property
    def net(self):
        """The network the shared Predictor calls (a PyTorch module, or its ONNX Runtime stand-in)."""
        return self.core.net

    # ---------------------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path: str | Path, config=None, *, allow_pickle: bool = False,
                        fast: bool = True) -> "KeypointPredictor":
        """Build the network from the checkpoint's stored config (or ``config`` when the file has none,
        e.g. the authors' release), load the weights strictly and fold BatchNorm for speed. The file
        is read once; a bad file raises ``model.CheckpointError`` (one line naming it)."""
        from model import read_checkpoint

        checkpoint = read_checkpoint(path, allow_pickle=allow_pickle)
        config = checkpoint.config() or config
        core = Predictor.from_checkpoint(checkpoint, config, fast=fast)
        return cls(core, config, source=str(path))

    @classmethod
    def untrained_from_config(cls, config, *, seed: int = 0, fast: bool = True) -> "KeypointPredictor":
        """Random weights (for trying the interface without a trained model; the points mean nothing)."""
        from model import build_model, prepare_for_inference

        torch.manual_seed(seed)
        net = build_model(without_imagenet(config))
        net = prepare_for_inference(net) if fast else net.eval().requires_grad_(False)
        return cls(Predictor(net, config), config, source="untrained (random weights)", untrained=True)

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

    def clicks(self, fixed_rc: dict[int, tuple[float, float]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(click positions (1, K, 2), fixed mask (1, K) bool) for grid positions of fixed points."""
        coords = torch.zeros(1, self.num_keypoints, 2)
        mask = torch.zeros(1, self.num_keypoints, dtype=torch.bool)
        for index, (row, col) in fixed_rc.items():
            coords[0, index] = torch.tensor([float(row), float(col)])
            mask[0, index] = True
        return coords, mask

    def predict(self, image_t: torch.Tensor, fixed_rc: dict[int, tuple[float, float]],
                prev_probs: torch.Tensor | None) -> Prediction:
        """Predict all points given the fixed ones (grid (row, col)) and the last prediction's probs.

        With no fixed point the previous heatmap is zero, as in the first round of the protocol.
        The returned points are the network's decoding for every point; the caller puts the fixed
        points back where the person left them.
        """
        click_rc, mask = self.clicks(fixed_rc)
        last = None if prev_probs is None else prev_probs.float()[None]
        with self._lock, torch.inference_mode():
            probs = self.core.probs(image_t, click_rc, mask, last)
        points = self.core.points(probs)[0]
        return Prediction(points_rc=points, probs=probs[0], confidence=probs[0].amax(dim=(-2, -1)))

    def warm_up(self) -> None:
        """Two throw-away predictions (the first call of a fresh network is several times slower),
        which also check the weights: NonFinitePrediction when the output is not finite."""
        image = torch.zeros(1, 3, *self.size_rc)
        first = self.predict(image, {}, None)
        second = self.predict(image, {0: (self.size_rc[0] / 2, self.size_rc[1] / 2)}, first.probs)
        for prediction in (first, second):
            check_finite(prediction.probs, f"on a blank test image: {self.source} is not usable")
