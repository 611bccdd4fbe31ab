"""One training step of the interactive network as in the paper: iterative click rounds, then the loss."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from misc.clicks import indices_to_mask, worst_unclicked
from misc.decoding import decode, hard_argmax
from misc.heatmaps import click_maps, gaussian_heatmaps, keep_channels
from misc.losses import heatmap_bce
from misc.metrics import radial_errors
from misc.morphology import morphology_loss


@dataclass
class LossTerms:
    total: torch.Tensor
    bce_main: float
    bce_aux: float
    morph: float


def simulate_click_rounds(net, image, targets, true_rc, clicked, rounds: int,
                          prev_only_clicked: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """RITM iterative training: ``rounds`` no-grad predictions in eval mode, each adding the worst
    not-yet-clicked keypoint (hard-argmax radial error on the grid) to the clicks.

    Returns (clicked, prev_probs); prev_probs is zeros when rounds == 0 and otherwise the full
    previous prediction, as in the official training, or with ``prev_only_clicked`` only its
    clicked channels (what the test protocol feeds with use_prev_heatmap_only_for_hint_index).
    """
    prev = torch.zeros_like(targets)
    if rounds == 0:
        return clicked, prev
    was_training = net.training
    net.eval()
    with torch.no_grad():
        for _ in range(rounds):
            fed = keep_channels(prev, clicked) if prev_only_clicked else prev
            prev = torch.sigmoid(net(image, click_maps(targets, clicked), fed, with_aux=False)[0])
            errors = radial_errors(hard_argmax(prev), true_rc)
            worst = worst_unclicked(errors, clicked)
            clicked = clicked.clone()
            clicked[torch.arange(len(worst)), worst] = True
    net.train(was_training)
    return clicked, keep_channels(prev, clicked) if prev_only_clicked else prev


def compute_loss(logits, aux_logits, targets, true_rc, morph_mask, config, morph_pairs) -> LossTerms:
    """BCE(main) + BCE(aux) + morphology loss on the sub-pixel decoded main prediction."""
    bce_main = heatmap_bce(logits, targets)
    bce_aux = heatmap_bce(aux_logits, targets)
    total = bce_main + bce_aux
    morph = torch.zeros((), device=logits.device)
    if config.Morph.use:
        pred_rc = decode(torch.sigmoid(logits), config.Dataset.subpixel_decoding,
                         config.Dataset.subpixel_decoding_patch_size)
        mask = None if config.Morph.apply_to_augmented else morph_mask
        pairs, triplets = morph_pairs
        morph = morphology_loss(pred_rc, true_rc, config.Dataset.image_size, pairs, triplets,
                                config.Morph.distance_lambda, config.Morph.angle_lambda,
                                sample_mask=mask, distance_l1=config.Morph.distance_l1)
        total = total + morph
    return LossTerms(total, float(bce_main.detach()), float(bce_aux.detach()), float(morph.detach()))


def training_step(net, batch: dict, config, morph_pairs, rng: np.random.Generator, device) -> LossTerms:
    """Forward + loss for one batch (the caller does backward and the optimizer step).

    ``net`` may be wrapped in DistributedDataParallel; the no-grad rounds use the inner module.
    """
    inner = getattr(net, "module", net)
    image = batch["image"].to(device, non_blocking=True)
    true_rc = batch["coords_rc"].to(device)
    targets = gaussian_heatmaps(true_rc, config.Dataset.image_size, config.Dataset.heatmap_std)
    clicked = indices_to_mask(batch["clicks"], image.shape[0], targets.shape[1], device)
    rounds = int(rng.integers(config.Train.min_click_rounds, config.Train.max_click_rounds + 1))
    clicked, prev = simulate_click_rounds(inner, image, targets, true_rc, clicked, rounds,
                                          prev_only_clicked=config.Train.prev_heatmap == "clicked")
    logits, aux_logits = net(image, click_maps(targets, clicked), prev)
    return compute_loss(logits, aux_logits, targets, true_rc, batch["morph_mask"].to(device), config, morph_pairs)
