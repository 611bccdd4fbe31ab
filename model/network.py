"""The interactive keypoint network of the paper ("RITM_SE_HRNet32" in the official code).

    image ----------------------------------> HRNet stem ... layer1 ... stages -> aggregate (15w ch)
    concat(prev_probs, click_maps) -> ClickEncoder --^ (added after the first stem conv)   |
    click_maps + layer1 features -> InteractionGate ---------------------- x gate -------- +
                                                                                           |
    gated features -> aux head (soft keypoint regions) -> OCR context -> cls head -> logits

Submodule names reproduce the official state-dict keys without the leading ``module.``:
``ritm_hrnet.*`` (backbone, OCR head, heads, ``HintEncSENet``) and ``hintmap_encoder.{0,2,3}``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.click_encoder import ClickEncoder
from model.gating import InteractionGate
from model.hrnet import STEM_CHANNELS, HRNetV2
from model.ocr import SpatialGather, SpatialOCR

__all__ = ["HRNetOCRGated", "InteractiveKeypointNet"]

GATE_HIDDEN_CHANNELS = 256
GATE_SQUEEZE_CHANNELS = 16
OCR_DROPOUT = 0.05


class HRNetOCRGated(HRNetV2):
    """HRNetV2 + OCR head + interaction-guided gating (the official ``ritm_hrnet``).

    Returns logits at 1/4 of the input resolution; the heads live at the top level of this module
    (``conv3x3_ocr``, ``ocr_distri_head``, ``cls_head``, ``aux_head``, ``HintEncSENet``) as in the
    official weight format.
    """

    def __init__(self, num_keypoints: int, width: int = 32, ocr_width: int = 128, small: bool = False,
                 use_gating: bool = True, gate_max_pool: bool = True, align_corners: bool = True):
        super().__init__(width=width, small=small, align_corners=align_corners)
        if ocr_width < 1:
            raise ValueError(f"ocr_width must be >= 1, got {ocr_width}")
        feat_channels = self.out_channels
        ocr_mid_channels = 2 * ocr_width

        self.conv3x3_ocr = nn.Sequential(
            nn.Conv2d(feat_channels, ocr_mid_channels, 3, padding=1),
            nn.BatchNorm2d(ocr_mid_channels),
            nn.ReLU(inplace=True),
        )
        self.ocr_gather_head = SpatialGather()
        self.ocr_distri_head = SpatialOCR(ocr_mid_channels, ocr_width, ocr_mid_channels, dropout=OCR_DROPOUT)
        self.cls_head = nn.Conv2d(ocr_mid_channels, num_keypoints, 1)
        self.aux_head = nn.Sequential(
            nn.Conv2d(feat_channels, feat_channels, 1),
            nn.BatchNorm2d(feat_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(feat_channels, num_keypoints, 1),
        )
        self.use_gating = use_gating
        if use_gating:
            self.HintEncSENet = InteractionGate(
                self.layer1_channels, num_keypoints, feat_channels,
                hidden_channels=GATE_HIDDEN_CHANNELS, squeeze_channels=GATE_SQUEEZE_CHANNELS,
                max_pool=gate_max_pool)

    def forward(self, image: torch.Tensor, click_features: torch.Tensor | None,
                click_maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (logits, aux_logits), both (B,K,H/4,W/4).

        The auxiliary logits are always computed: the OCR head needs them as soft regions.
        """
        x = self.layer1(self.forward_stem(image, click_features))
        gate = self.HintEncSENet(x, click_maps) if self.use_gating else None
        feats = self.aggregate(self.forward_branches(x))
        if gate is not None:
            feats = feats * gate
        aux_logits = self.aux_head(feats)
        pixel_feats = self.conv3x3_ocr(feats)
        contexts = self.ocr_gather_head(pixel_feats, aux_logits)
        logits = self.cls_head(self.ocr_distri_head(pixel_feats, contexts))
        return logits, aux_logits


class InteractiveKeypointNet(nn.Module):
    """Interactive keypoint estimation network (paper defaults: 68 keypoints, HRNet-W32, OCR 128).

    Args:
        num_keypoints: K, the number of heatmap / click-map channels.
        width: HRNet width (32 = HRNetV2-W32).
        ocr_width: OCR key channels; the OCR pixel features have twice as many.
        small: RITM's light HRNet (2 blocks per branch, fewer modules).
        use_gating: False removes the interaction-guided gating (ablation; its weights disappear
            from the state dict).
        gate_max_pool: squeeze by global max pooling (paper) instead of average pooling.
        click_scale_init: initial value of the click encoder's learnable scale.
    """

    def __init__(self, num_keypoints: int = 68, width: int = 32, ocr_width: int = 128, small: bool = False,
                 use_gating: bool = True, gate_max_pool: bool = True, click_scale_init: float = 0.05):
        super().__init__()
        self.num_keypoints = num_keypoints
        self.ritm_hrnet = HRNetOCRGated(num_keypoints, width=width, ocr_width=ocr_width, small=small,
                                        use_gating=use_gating, gate_max_pool=gate_max_pool)
        self.hintmap_encoder = ClickEncoder(num_keypoints, out_channels=STEM_CHANNELS, scale_init=click_scale_init)

    def forward(self, image: torch.Tensor, click_maps: torch.Tensor, prev_probs: torch.Tensor | None = None,
                *, with_aux: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One interactive prediction.

        Args:
            image: (B,3,H,W) scaled to [-1, 1].
            click_maps: (B,K,H,W) Gaussian of the true position on clicked channels, zeros elsewhere.
            prev_probs: (B,K,H,W) previous predicted probabilities (sigmoid of the logits); None = zeros
                (the first round).
            with_aux: False skips upsampling the auxiliary logits (returned as None); the main logits
                are unchanged.
        Returns:
            (logits, aux_logits), each (B,K,H,W), upsampled bilinearly (align_corners=True).
        """
        if click_maps.shape[1] != self.num_keypoints:
            raise ValueError(f"click_maps must have {self.num_keypoints} channels, got shape {tuple(click_maps.shape)}")
        if prev_probs is None:
            prev_probs = torch.zeros_like(click_maps)
        click_features = self.hintmap_encoder(prev_probs, click_maps)
        logits, aux_logits = self.ritm_hrnet(image, click_features, click_maps)
        size = image.shape[-2:]
        # .contiguous(): with a channels-last network the full-size outputs still come out in the
        # standard layout (and bilinear upsampling is faster on it)
        logits = F.interpolate(logits.contiguous(), size=size, mode="bilinear", align_corners=True)
        if not with_aux:
            return logits, None
        return logits, F.interpolate(aux_logits.contiguous(), size=size, mode="bilinear", align_corners=True)

    def predict(self, image: torch.Tensor, click_maps: torch.Tensor,
                prev_probs: torch.Tensor | None = None) -> torch.Tensor:
        """Main logits only (B,K,H,W). Put the network in eval mode and wrap the call in
        ``torch.inference_mode()`` (or ``no_grad``) yourself; this method changes neither."""
        return self.forward(image, click_maps, prev_probs, with_aux=False)[0]
