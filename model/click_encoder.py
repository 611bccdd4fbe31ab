"""RITM click encoder (the architecture of the paper).

concat(previous probabilities, click maps) (2K channels) -> 1x1 conv -> 16 -> LeakyReLU(0.2) ->
3x3 stride-2 conv -> 64 -> times |scale| (a learnable scalar, initially 0.05).
The output has the stem's shape after its first conv (64 channels, 1/2 resolution) and is added there.

The module is an ``nn.Sequential`` so that its weights are named ``0``, ``2``, ``3.scale`` as in the
official checkpoints (``hintmap_encoder.*``).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AbsScale", "ClickEncoder"]


class AbsScale(nn.Module):
    """Multiply by the absolute value of one learnable scalar."""

    def __init__(self, init_value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.full((1,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.abs()


class ClickEncoder(nn.Sequential):
    """Encode (previous probabilities, click maps) into features added to the HRNet stem.

    The official order of the concatenation is previous probabilities first, then click maps.
    """

    def __init__(self, num_keypoints: int, out_channels: int = 64, hidden_channels: int = 16,
                 scale_init: float = 0.05):
        super().__init__(
            nn.Conv2d(2 * num_keypoints, hidden_channels, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(hidden_channels, out_channels, 3, stride=2, padding=1),
            AbsScale(scale_init),
        )

    def __getitem__(self, idx):
        if isinstance(idx, slice):  # a slice is a plain Sequential (this constructor takes other args)
            return nn.Sequential(OrderedDict(list(self._modules.items())[idx]))
        return super().__getitem__(idx)

    def forward(self, prev_probs: torch.Tensor, click_maps: torch.Tensor) -> torch.Tensor:
        """prev_probs, click_maps (B,K,H,W) -> (B,out_channels,H/2,W/2).

        The first (1x1) conv of concat(prev_probs, click_maps) is computed as the sum of the convs of
        each part with its half of the same weight: the result equals the official one up to float
        rounding, without building the 2K-channel full-resolution concatenation (~70 MB at 512x256).
        """
        first = self[0]
        k = prev_probs.shape[1]
        x = F.conv2d(prev_probs, first.weight[:, :k], first.bias) + F.conv2d(click_maps, first.weight[:, k:])
        for layer in list(self)[1:]:
            x = layer(x)
        return x
