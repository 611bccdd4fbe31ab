"""Exponential moving average of a network's weights (``Train.ema_decay``; off = the paper).

The averaged copy is what validation measures and what best.pth holds: it smooths the epoch-to-epoch
swings of a constant or high learning rate. BatchNorm running statistics are averaged like the weights
(they follow the weights they were measured under); integer buffers (``num_batches_tracked``) are copied.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay_at(step: int, decay: float) -> float:
    """Decay for the ``step``-th update (1-based): ``min(decay, (1 + step) / (10 + step))``, so that the
    first updates are not dominated by the random initialisation (the average of the first few steps
    is close to their plain mean)."""
    return min(decay, (1.0 + step) / (10.0 + step))


class WeightAverage:
    """Holds ``net``'s averaged copy. ``update(net)`` after every optimizer step; ``module`` is the
    averaged network (eval it, save it); ``state_dict``/``load_state_dict`` carry it across a resume."""

    def __init__(self, net: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.steps = 0
        self.module = copy.deepcopy(net).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        self.steps += 1
        weight = 1.0 - ema_decay_at(self.steps, self.decay)
        current = net.state_dict()
        for key, averaged in self.module.state_dict().items():
            value = current[key].detach()
            if averaged.is_floating_point():
                averaged.lerp_(value.to(averaged.dtype), weight)
            else:
                averaged.copy_(value)

    def state_dict(self) -> dict:
        return {"steps": self.steps, "decay": self.decay, "model": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.module.load_state_dict(state["model"], strict=True)
