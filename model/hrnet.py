"""HRNetV2 backbone, RITM variant (the architecture of the paper).

Stem (two 3x3 stride-2 convs, 64 channels) -> layer1 (bottlenecks, 64 -> 256 channels) ->
stages 2/3/4 with 2/3/4 parallel branches of widths w, 2w, 4w, 8w -> all branches upsampled to the
1/4-resolution branch and concatenated (15w channels; 480 for w = 32).

Attribute names follow HRNet (``conv1``, ``layer1``, ``transition1``, ``stage2`` ...,
``branches``, ``fuse_layers``): they are a public weight format shared with HRNet-Image-Classification,
RITM and the official implementation of the paper, so they must not be renamed.

``small=True`` is RITM's light variant: 2 instead of 4 blocks everywhere and fewer modules in
stages 3 (3 instead of 4) and 4 (2 instead of 3).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BasicBlock", "Bottleneck", "HighResolutionModule", "HRNetV2"]

STEM_CHANNELS = 64
LAYER1_PLANES = 64


def _resize(x: torch.Tensor, size: Sequence[int], align_corners: bool = True) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
             relu: bool = True) -> nn.Sequential:
    """conv (no bias) -> BN [-> ReLU]; indices 0/1 are part of the weight format."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN with an identity (or projected) shortcut."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4), each with BN, plus shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


def make_blocks(block: type[BasicBlock] | type[Bottleneck], in_channels: int, planes: int,
                num_blocks: int, stride: int = 1) -> nn.Sequential:
    """A run of residual blocks; the first one gets a 1x1 conv+BN shortcut when shapes change."""
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
            nn.BatchNorm2d(out_channels),
        )
    blocks = [block(in_channels, planes, stride, downsample)]
    blocks += [block(out_channels, planes) for _ in range(1, num_blocks)]
    return nn.Sequential(*blocks)


class HighResolutionModule(nn.Module):
    """Parallel branches of basic blocks followed by an all-to-all exchange (fuse by sum).

    For output branch i, input branch j contributes:
      j == i: itself;
      j > i:  1x1 conv+BN to branch i's channels, then bilinear upsampling to branch i's size;
      j < i:  i-j 3x3 stride-2 conv+BN steps (ReLU between steps, not after the last).
    The sum goes through a ReLU.
    """

    def __init__(self, channels: Sequence[int], num_blocks: int, align_corners: bool = True):
        super().__init__()
        self.channels = list(channels)
        self.align_corners = align_corners
        self.branches = nn.ModuleList(make_blocks(BasicBlock, c, c, num_blocks) for c in channels)
        self.fuse_layers = nn.ModuleList(
            nn.ModuleList(self._fuse_path(j, i) for j in range(len(channels))) for i in range(len(channels))
        )
        self.relu = nn.ReLU(inplace=True)

    def _fuse_path(self, source: int, target: int) -> nn.Module:
        c_in, c_out = self.channels[source], self.channels[target]
        if source == target:
            return nn.Identity()
        if source > target:
            return _conv_bn(c_in, c_out, 1, relu=False)
        steps = target - source
        return nn.Sequential(*(
            _conv_bn(c_in, c_out if k == steps - 1 else c_in, 3, stride=2, relu=k < steps - 1)
            for k in range(steps)
        ))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if len(xs) == 1:
            return xs
        out = []
        for i, paths in enumerate(self.fuse_layers):
            size = xs[i].shape[-2:]
            total = None
            for j, path in enumerate(paths):
                y = path(xs[j])
                if j > i:
                    y = _resize(y, size, self.align_corners)
                total = y if total is None else total + y
            out.append(self.relu(total))
        return out


class HRNetV2(nn.Module):
    """HRNetV2 feature extractor.

    The forward is split into steps so that a network can act between them:
    ``forward_stem`` (optionally adding features after the first conv+BN+ReLU, as RITM does with
    the encoded clicks), ``layer1``, ``forward_branches`` and ``aggregate``.
    """

    def __init__(self, width: int = 32, small: bool = False, align_corners: bool = True):
        super().__init__()
        if width < 1:
            raise ValueError(f"HRNet width must be >= 1, got {width}")
        self.width = width
        self.align_corners = align_corners
        num_blocks = 2 if small else 4
        modules_per_stage = (1, 3, 2) if small else (1, 4, 3)

        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.conv2 = nn.Conv2d(STEM_CHANNELS, STEM_CHANNELS, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(STEM_CHANNELS)
        self.relu = nn.ReLU(inplace=True)

        self.layer1 = make_blocks(Bottleneck, STEM_CHANNELS, LAYER1_PLANES, num_blocks)
        self.layer1_channels = LAYER1_PLANES * Bottleneck.expansion

        previous = [self.layer1_channels]
        for stage, num_modules in zip((2, 3, 4), modules_per_stage):
            channels = [width * 2 ** b for b in range(stage)]
            setattr(self, f"transition{stage - 1}", self._make_transition(previous, channels))
            setattr(self, f"stage{stage}", nn.Sequential(*(
                HighResolutionModule(channels, num_blocks, align_corners) for _ in range(num_modules)
            )))
            previous = channels
        self.branch_channels = previous
        self.out_channels = sum(previous)

    @staticmethod
    def _make_transition(previous: Sequence[int], current: Sequence[int]) -> nn.ModuleList:
        """Adapt the branches of one stage to the next; new branches come from the lowest resolution."""
        layers: list[nn.Module] = []
        for i, c_out in enumerate(current):
            if i < len(previous):
                c_in = previous[i]
                layers.append(nn.Identity() if c_in == c_out else _conv_bn(c_in, c_out, 3))
            else:
                c_in = previous[-1]
                steps = i + 1 - len(previous)
                layers.append(nn.Sequential(*(
                    _conv_bn(c_in, c_out if k == steps - 1 else c_in, 3, stride=2) for k in range(steps)
                )))
        return nn.ModuleList(layers)

    @staticmethod
    def _apply_transition(transition: nn.ModuleList, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [layer(xs[i] if i < len(xs) else xs[-1]) for i, layer in enumerate(transition)]

    def forward_stem(self, image: torch.Tensor, stem_extra: torch.Tensor | None = None) -> torch.Tensor:
        """(B,3,H,W) -> (B,64,H/4,W/4); ``stem_extra`` (B,64,H/2,W/2) is added after conv1+BN+ReLU."""
        x = self.relu(self.bn1(self.conv1(image)))
        if stem_extra is not None:
            x = x + stem_extra
        return self.relu(self.bn2(self.conv2(x)))

    def forward_branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        """layer1 output -> the four branch outputs of stage 4 (resolutions 1/4 .. 1/32)."""
        xs = self._apply_transition(self.transition1, [x])
        xs = self.stage2(xs)
        xs = self._apply_transition(self.transition2, xs)
        xs = self.stage3(xs)
        xs = self._apply_transition(self.transition3, xs)
        return self.stage4(xs)

    def aggregate(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """Upsample every branch to the first one's size and concatenate along channels."""
        size = xs[0].shape[-2:]
        return torch.cat([xs[0]] + [_resize(x, size, self.align_corners) for x in xs[1:]], dim=1)

    def forward(self, image: torch.Tensor, stem_extra: torch.Tensor | None = None) -> torch.Tensor:
        """(B,3,H,W) -> aggregated features (B, 15*width, H/4, W/4)."""
        x = self.layer1(self.forward_stem(image, stem_extra))
        return self.aggregate(self.forward_branches(x))
