"""The predictor of RITM's separation: config + weights -> heatmaps and points for given clicks.

    predictor = Predictor.from_checkpoint("pretrained/aasce_cpu.pth")
    probs = predictor.probs(image, click_rc, clicked, prev_probs)   # (B, K, rows, cols) sigmoid heatmaps
    points = predictor.decode(probs)                                 # {"hargmax": ..., "sargmax": ...}

It owns everything between the clicks and the points: the Gaussian click maps (the training std), the
previous-heatmap rule (``Model.prev_heatmap``), the network call and the decoding; coordinates are
(row, col) on the network grid (``size_rc``); ``misc.frames`` converts them to original pixels.
The simulated user (truth, clicked mask, worst-point rule) is ``misc.clicks.Clicker``. The evaluation
protocol (engine/evaluation.py), the training-time click rounds (engine/training.py), the demo
(demo/predictor.py) and tools/click_response.py all predict through this class.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from misc.decoding import decode, hard_argmax
from misc.errors import BadInput
from misc.frames import mirror_maps
from misc.heatmaps import gaussian_heatmaps, keep_channels

__all__ = ["Predictor", "previous_input", "NonFinitePrediction", "check_finite"]


class NonFinitePrediction(BadInput):
    """The network's output holds NaN or infinite values: its weights are not usable."""


def check_finite(probs: torch.Tensor, where: str) -> torch.Tensor:
    """``probs`` unchanged, or NonFinitePrediction naming ``where`` when any value is NaN or infinite."""
    if not bool(torch.isfinite(probs).all()):
        raise NonFinitePrediction(f"the model predicts NaN or infinite heatmaps {where}")
    return probs


def previous_input(probs: torch.Tensor | None, clicked: torch.Tensor, rule: str, training: bool) -> torch.Tensor | None:
    """What the network receives as previous heatmap: the last prediction ``probs`` (B, K, H, W), all
    channels or only the clicked ones (B, K) by ``rule`` (Model.prev_heatmap), or None (= zeros) when
    there is no last prediction, nothing is clicked yet (the first round) or the rule is 'none'."""
    if rule == "none" or probs is None or not bool(clicked.any()):
        return None
    only_clicked = rule == "clicked" or (rule == "clicked_at_test" and not training)
    return keep_channels(probs, clicked) if only_clicked else probs


class Predictor:
    """A network (anything called as ``net(image, click_maps, prev, with_aux=False)`` -> (logits, ...))
    with the config facts prediction needs. It neither changes the network's mode nor disables
    gradients: callers wrap calls in ``torch.inference_mode()`` / ``no_grad`` as they need."""

    def __init__(self, net, config):
        self.net = net
        self.size_rc = tuple(int(v) for v in config.Dataset.image_size)
        self.heatmap_std = float(config.Dataset.heatmap_std)
        self.subpixel = bool(config.Dataset.subpixel_decoding)
        self.patch_size = int(config.Dataset.subpixel_decoding_patch_size)
        self.prev_rule = str(config.Model.prev_heatmap)
        self.flip_average = bool(config.get("Test", {}).get("flip_average", False))

    @classmethod
    def from_checkpoint(cls, source, config=None, *, allow_pickle: bool = False, fast: bool = False,
                        overrides=()) -> "Predictor":
        """Build the network from the checkpoint's stored config (``config`` when the file has none,
        e.g. the authors' release, or to override it), load the weights strictly and put it in eval
        mode; ``fast`` folds BatchNorm (prediction only). ``source``: a path or a Checkpoint."""
        from model import build_model, load_weights, prepare_for_inference, read_checkpoint

        checkpoint = source if not isinstance(source, (str, os.PathLike)) else read_checkpoint(
            Path(source), allow_pickle=allow_pickle)
        config = config if config is not None else checkpoint.config(overrides)
        if config is None:
            raise _no_config(checkpoint.path)
        net = build_model(without_imagenet(config))
        load_weights(net, checkpoint)
        net = prepare_for_inference(net) if fast else net.eval().requires_grad_(False)
        return cls(net, config)

    def click_maps(self, click_rc: torch.Tensor, clicked: torch.Tensor) -> torch.Tensor:
        """Channel k holds a Gaussian (peak 1, the training std) at ``click_rc[b, k]`` where
        ``clicked[b, k]``, zeros elsewhere: (B, K, 2), (B, K) bool -> (B, K, rows, cols)."""
        maps = gaussian_heatmaps(click_rc, self.size_rc, self.heatmap_std)
        return maps * clicked[..., None, None].to(maps.dtype)

    def previous(self, probs: torch.Tensor | None, clicked: torch.Tensor, training: bool = False):
        return previous_input(probs, clicked, self.prev_rule, training)

    def probs(self, image: torch.Tensor, click_rc: torch.Tensor, clicked: torch.Tensor,
              last_probs: torch.Tensor | None = None, training: bool = False,
              click_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Sigmoid heatmaps (B, K, rows, cols) for clicks at ``click_rc`` on the ``clicked`` channels,
        given the last prediction ``last_probs`` (all channels; the previous-heatmap rule is applied
        here). ``training``: the call is a training-time click round (the rule may differ; no flip
        averaging there). ``click_weights`` (B, K): the peak of each click's map (default 1, as trained;
        automatic revision may give its hints less)."""
        prev = self.previous(last_probs, clicked, training)
        maps = self.click_maps(click_rc, clicked)
        if click_weights is not None:
            maps = maps * click_weights[..., None, None].to(maps.dtype)
        probs = torch.sigmoid(self.net(image, maps, prev, with_aux=False)[0])
        if self.flip_average and not training:
            mirrored_prev = None if prev is None else mirror_maps(prev)
            mirrored = torch.sigmoid(self.net(image.flip(-1), mirror_maps(maps), mirrored_prev, with_aux=False)[0])
            probs = (probs + mirror_maps(mirrored)) / 2
        return probs

    def decode(self, probs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Grid (row, col) (B, K, 2) per decoding: "hargmax" (the maximum) and "sargmax" (the
        configured sub-pixel or soft-argmax decoding)."""
        return {"hargmax": hard_argmax(probs), "sargmax": self.points(probs)}

    def points(self, probs: torch.Tensor) -> torch.Tensor:
        """The configured ("sargmax") decoding alone, (B, K, 2) grid (row, col)."""
        return decode(probs, self.subpixel, self.patch_size)

    def bind(self, image: torch.Tensor, click_rc: torch.Tensor):
        """``predict(clicked, last_probs) -> probs`` for one batch, as ``engine.revision.run_revisions`` wants."""
        return lambda clicked, last_probs: self.probs(image, click_rc, clicked, last_probs)


def without_imagenet(config):
    """A copy of the config that does not try to load ImageNet weights (the checkpoint replaces them)."""
    config = config.copy()
    config.Model = config.Model.copy()
    config.Model.imagenet_pretrained = ""
    return config


def _no_config(path) -> Exception:
    from model.weights import CheckpointError

    return CheckpointError(f"{path} holds no config (not one of our checkpoints): pass the config that matches "
                           f"it (command line: --config config/<name>.yaml)")
