"""The interactive keypoint network: builder and weight I/O.

    net = build_model(config)                 # InteractiveKeypointNet from config.Model / config.Dataset
    checkpoint = read_checkpoint(path)        # read once: .state_dict, .entries, .config()
    load_weights(net, checkpoint)             # ours, the authors' release, or a bare state dict (or a path)
    logits, aux_logits = net(image, click_maps, prev_probs)
    fast = prepare_for_inference(net)         # eval copy with BatchNorm folded, for prediction only
"""
from __future__ import annotations

from model.inference import prepare_for_inference
from model.network import InteractiveKeypointNet
from model.weights import (Checkpoint, CheckpointError, ImagenetLoadReport, UnsafeCheckpointError,
                           load_imagenet_hrnet, load_weights, read_checkpoint, save_checkpoint)

__all__ = ["build_model", "InteractiveKeypointNet", "load_weights", "save_checkpoint", "load_imagenet_hrnet",
           "prepare_for_inference", "ImagenetLoadReport", "UnsafeCheckpointError", "CheckpointError",
           "Checkpoint", "read_checkpoint"]

_MODEL_KEYS = ("width", "ocr_width", "small", "SE_maxpool", "use_gating", "click_scale_init", "imagenet_pretrained")


def build_model(config) -> InteractiveKeypointNet:
    """Build the network from a (Munch) config.

    Reads ``Dataset.num_keypoint`` and ``Model.{width, ocr_width, small, SE_maxpool, use_gating,
    click_scale_init, imagenet_pretrained}``; a non-empty ``imagenet_pretrained`` path initialises the
    HRNet from ImageNet weights (a missing file warns and keeps the random initialisation).
    """
    missing = [f"Model.{k}" for k in _MODEL_KEYS if k not in config.Model]
    if "num_keypoint" not in config.Dataset:
        missing.append("Dataset.num_keypoint")
    if missing:
        raise KeyError(f"build_model: config lacks {missing}")
    m = config.Model
    net = InteractiveKeypointNet(
        num_keypoints=int(config.Dataset.num_keypoint),
        width=int(m.width),
        ocr_width=int(m.ocr_width),
        small=bool(m.small),
        use_gating=bool(m.use_gating),
        gate_max_pool=bool(m.SE_maxpool),
        click_scale_init=float(m.click_scale_init),
    )
    if m.imagenet_pretrained:
        load_imagenet_hrnet(net, m.imagenet_pretrained)
    return net
