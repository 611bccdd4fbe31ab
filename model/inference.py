"""Optional speed-ups for prediction only (eval mode, no training, no checkpoint saving).

``prepare_for_inference`` returns a COPY of the network in eval mode with
  - every BatchNorm folded into the convolution before it (removes one pass over every feature
    map; the main logits change only by float rounding, about 1e-6), and
  - optionally the channels-last memory format (measure with ``bench/bench_model.py`` first: on
    some CPUs it is slower).
The copy's state dict has other keys (no BatchNorm entries, conv biases added): never save it as a
checkpoint; keep the original network for that.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batchnorm", "prepare_for_inference"]

_NAMED_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))


def _leading_bn(module: nn.Module) -> tuple[nn.Module, str] | None:
    """(holder, name) of the BatchNorm2d opening ``module`` when it is a Sequential like (BN, ReLU)."""
    if isinstance(module, nn.Sequential) and len(module) and isinstance(module[0], nn.BatchNorm2d):
        return module, "0"
    return None


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """Fold every conv -> BatchNorm2d pair of ``net`` in place (``net`` must be in eval mode).

    Pairs are the consecutive items of an ``nn.Sequential`` (also ``conv, Sequential(bn, relu)``)
    and the ``convN``/``bnN`` attributes of residual blocks and of the HRNet stem, whose forward
    passes apply ``bnN`` directly to the output of ``convN``.
    """
    if net.training:
        raise ValueError("fold_batchnorm needs a network in eval mode (BatchNorm running statistics)")
    for parent in list(net.modules()):
        if isinstance(parent, nn.Sequential):
            items = list(parent._modules.items())
            for (conv_name, conv), (bn_name, follower) in zip(items, items[1:]):
                if not isinstance(conv, nn.Conv2d):
                    continue
                if isinstance(follower, nn.BatchNorm2d):
                    holder, name = parent, bn_name
                else:
                    found = _leading_bn(follower)
                    if found is None:
                        continue
                    holder, name = found
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, getattr(holder, name)))
                setattr(holder, name, nn.Identity())
        else:
            for conv_name, bn_name in _NAMED_PAIRS:
                conv, bn = getattr(parent, conv_name, None), getattr(parent, bn_name, None)
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
                    setattr(parent, bn_name, nn.Identity())
    return net


def prepare_for_inference(net: nn.Module, *, fold_bn: bool = True, channels_last: bool = False) -> nn.Module:
    """An eval-mode copy of ``net`` made faster for prediction (see the module docstring).

    With ``channels_last`` the inputs may stay contiguous; PyTorch converts them at the first conv.
    """
    fast = copy.deepcopy(net).eval()
    if fold_bn:
        fold_batchnorm(fast)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
        encoder = getattr(fast, "hintmap_encoder", None)
        if encoder is not None:  # it reads the full-resolution inputs: converting them costs more than it saves
            encoder.to(memory_format=torch.contiguous_format)
    return fast.requires_grad_(False)
