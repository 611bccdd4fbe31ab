"""Object-contextual representation (OCR) head pieces, as in HRNet-OCR and RITM (the architecture of the paper).

Here the "objects" are the keypoints: every keypoint's soft region (the spatial softmax of the
auxiliary logits) pools one context vector out of the pixel features; every pixel then attends over
the K context vectors, and the attended context is concatenated with the pixel features.

Attribute names (``f_pixel``, ``f_object``, ``f_down``, ``f_up``, ``object_context_block``,
``conv_bn_dropout``) and the nesting of BN+ReLU in their own ``nn.Sequential`` belong to the
weight format and must stay as they are.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SpatialGather", "ObjectAttentionBlock", "SpatialOCR"]


def _conv1x1_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.Sequential(nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))]


class SpatialGather(nn.Module):
    """Soft-region pooling: context[b, :, k] = sum_p softmax_p(region_logits[b, k])[p] * feats[b, :, p]."""

    def forward(self, feats: torch.Tensor, region_logits: torch.Tensor) -> torch.Tensor:
        """feats (B,C,h,w), region_logits (B,K,h,w) -> contexts (B,C,K,1)."""
        weights = F.softmax(region_logits.flatten(2), dim=2)  # B,K,hw
        contexts = torch.bmm(weights, feats.flatten(2).transpose(1, 2))  # B,K,C
        return contexts.transpose(1, 2).unsqueeze(3)


class ObjectAttentionBlock(nn.Module):
    """Pixels (queries) attend over the K keypoint contexts (keys/values).

    query = f_pixel(feats), key = f_object(contexts), value = f_down(contexts), all with
    ``key_channels``; softmax over the K contexts of the scaled dot products; the attended values
    are projected back to ``in_channels`` by f_up.
    """

    def __init__(self, in_channels: int, key_channels: int):
        super().__init__()
        self.key_channels = key_channels
        self.f_pixel = nn.Sequential(*_conv1x1_bn_relu(in_channels, key_channels),
                                     *_conv1x1_bn_relu(key_channels, key_channels))
        self.f_object = nn.Sequential(*_conv1x1_bn_relu(in_channels, key_channels),
                                      *_conv1x1_bn_relu(key_channels, key_channels))
        self.f_down = nn.Sequential(*_conv1x1_bn_relu(in_channels, key_channels))
        self.f_up = nn.Sequential(*_conv1x1_bn_relu(key_channels, in_channels))

    def forward(self, feats: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        """feats (B,C,h,w), contexts (B,C,K,1) -> attended context per pixel (B,C,h,w)."""
        b, _, h, w = feats.shape
        query = self.f_pixel(feats).flatten(2).transpose(1, 2)  # B,hw,c
        key = self.f_object(contexts).flatten(2)  # B,c,K
        value = self.f_down(contexts).flatten(2).transpose(1, 2)  # B,K,c
        attention = F.softmax(torch.bmm(query, key) * self.key_channels ** -0.5, dim=-1)  # B,hw,K
        attended = torch.bmm(attention, value).transpose(1, 2).reshape(b, self.key_channels, h, w)
        return self.f_up(attended)


class SpatialOCR(nn.Module):
    """concat(object attention context, pixel feats) -> 1x1 conv -> BN+ReLU -> Dropout2d."""

    def __init__(self, in_channels: int, key_channels: int, out_channels: int, dropout: float = 0.05):
        super().__init__()
        self.object_context_block = ObjectAttentionBlock(in_channels, key_channels)
        self.conv_bn_dropout = nn.Sequential(*_conv1x1_bn_relu(2 * in_channels, out_channels),
                                             nn.Dropout2d(dropout))

    def forward(self, feats: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        attended = self.object_context_block(feats, contexts)
        return self.conv_bn_dropout(torch.cat([attended, feats], dim=1))
