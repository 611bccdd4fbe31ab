"""Interaction-guided gating (as in the paper): the clicks decide which backbone channels matter.

concat(layer1 features, click maps resized to their size) -> three 3x3 conv+BN+ReLU blocks
(strides 2, 1, 1; Kaiming-normal init) -> global max pool (average pool as an option) ->
1x1 conv -> 16, ReLU -> 1x1 conv -> one weight per aggregated backbone channel -> sigmoid.
The network multiplies its aggregated features by the returned gate.

The attribute names ``hintEncoder`` / ``SENet`` / ``convs`` / ``conv1`` / ``conv2`` are the official
weight format (``ritm_hrnet.HintEncSENet.{hintEncoder,SENet}``) and must stay as they are.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvStack", "ChannelExcitation", "InteractionGate"]


class ConvStack(nn.Module):
    """3x3 conv (no bias) + BN + ReLU blocks with Kaiming-normal conv weights."""

    def __init__(self, in_channels: int, channels: Sequence[int], strides: Sequence[int]):
        super().__init__()
        if len(channels) != len(strides):
            raise ValueError(f"need one stride per block, got channels={channels}, strides={strides}")
        blocks = []
        for c_in, c_out, stride in zip([in_channels, *channels[:-1]], channels, strides):
            blocks.append(nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                                        nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)))
        self.convs = nn.Sequential(*blocks)
        for m in self.convs.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


class ChannelExcitation(nn.Module):
    """Squeeze (global max or mean) -> 1x1 conv, ReLU -> 1x1 conv -> sigmoid; returns (B,out,1,1)."""

    def __init__(self, in_channels: int, squeeze_channels: int, out_channels: int, max_pool: bool = True):
        super().__init__()
        self.max_pool = max_pool
        self.conv1 = nn.Conv2d(in_channels, squeeze_channels, 1)
        self.conv2 = nn.Conv2d(squeeze_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.amax(dim=(2, 3), keepdim=True) if self.max_pool else x.mean(dim=(2, 3), keepdim=True)
        return torch.sigmoid(self.conv2(F.relu(self.conv1(pooled))))


class InteractionGate(nn.Module):
    """Channel gate computed from layer1 features and the click maps.

    Args:
        feature_channels: channels of the layer1 features (256 in HRNet).
        num_keypoints: number of click-map channels K.
        gate_channels: channels to gate (the aggregated backbone features, 15 * width).
        hidden_channels: channels of the three conv blocks (256 in the paper).
        squeeze_channels: bottleneck of the excitation (hidden_channels // 16 = 16 in the paper).
        max_pool: global max pooling (the paper, ``SE_maxpool``); False = global average pooling.
    """

    def __init__(self, feature_channels: int, num_keypoints: int, gate_channels: int,
                 hidden_channels: int = 256, squeeze_channels: int = 16, max_pool: bool = True):
        super().__init__()
        # registered in the official order (SENet first), so state-dict keys come out in the same order
        self.SENet = ChannelExcitation(hidden_channels, squeeze_channels, gate_channels, max_pool)
        self.hintEncoder = ConvStack(feature_channels + num_keypoints, [hidden_channels] * 3, [2, 1, 1])

    def forward(self, feats: torch.Tensor, click_maps: torch.Tensor) -> torch.Tensor:
        """feats (B,C,h,w), click_maps (B,K,H,W) -> gate (B,gate_channels,1,1) in (0, 1)."""
        clicks = F.interpolate(click_maps, size=feats.shape[-2:], mode="bilinear", align_corners=True)
        return self.SENet(self.hintEncoder(torch.cat([feats, clicks], dim=1)))
