"""Several trained networks predicting as one: a test-time ensemble (evaluation only, off by default).

    net = load_ensemble(net, config, ["save/b.pth", "save/c.pth"])   # `net` plus the networks of b and c
    logits, = net(image, click_maps, prev)                            # called like one network

The members see the same image, clicks and previous heatmap (the ensemble's own last prediction, which
the revision protocol feeds back as for one network) and their sigmoid heatmaps are averaged. The
average is returned as logits, with the probabilities clamped to [LOGIT_EPS, 1 - LOGIT_EPS] so that a
saturated map stays finite; everything after ``net(...)[0]`` (the Predictor's sigmoid, the decoding)
is unchanged. Measured on the 2-hour recipe's seeds in docs/experiments.md (*A seed ensemble*).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from misc.errors import BadInput
from model.predictor import Predictor
from model.weights import read_checkpoint

__all__ = ["HeatmapEnsemble", "load_ensemble", "PREDICTION_KEYS", "LOGIT_EPS"]

LOGIT_EPS = 1e-6
# what the Predictor and the decoding read from the config: members must agree on all of it
PREDICTION_KEYS = (("Dataset", "image_size"), ("Dataset", "heatmap_std"), ("Dataset", "num_keypoint"),
                   ("Dataset", "subpixel_decoding"), ("Dataset", "subpixel_decoding_patch_size"),
                   ("Model", "prev_heatmap"))


class HeatmapEnsemble(nn.Module):
    """Networks called like one (``net(image, click_maps, prev, with_aux=False)``) whose output logits
    are those of the mean of their sigmoid heatmaps; there is no auxiliary output."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one network")
        self.members = nn.ModuleList(members)

    def forward(self, image, click_maps, prev=None, with_aux: bool = False):
        if with_aux:
            raise ValueError("an ensemble has no auxiliary output (evaluation only)")
        probs = torch.stack([torch.sigmoid(member(image, click_maps, prev, with_aux=False)[0])
                             for member in self.members]).mean(0)
        return (torch.logit(probs, eps=LOGIT_EPS),)


def _value(config, section: str, key: str):
    value = config[section][key]
    return list(value) if isinstance(value, (list, tuple)) else value


def load_ensemble(first: nn.Module, config, paths: Sequence, *, allow_pickle: bool = False) -> HeatmapEnsemble:
    """``first`` (already loaded, with ``config``) and the networks of the checkpoints at ``paths``, each
    built from its own stored config. A checkpoint without a config, or one that predicts on other terms
    than ``config`` (PREDICTION_KEYS: input size, heatmap std, keypoints, decoding, previous-heatmap rule)
    is a BadInput naming the file and the key."""
    members = [first]
    device = next(first.parameters()).device
    for path in paths:
        checkpoint = read_checkpoint(path, allow_pickle=allow_pickle)
        member_config = checkpoint.config()
        if member_config is None:
            raise BadInput(f"{checkpoint.path}: holds no config, so it cannot join an ensemble (written by train.py?)")
        for section, key in PREDICTION_KEYS:
            mine, theirs = _value(member_config, section, key), _value(config, section, key)
            if mine != theirs:
                raise BadInput(f"{checkpoint.path}: {section}.{key} is {mine!r}, the first model's is {theirs!r}; "
                               f"ensemble members must predict on the same terms")
        members.append(Predictor.from_checkpoint(checkpoint, member_config).net.to(device))
    return HeatmapEnsemble(members)
