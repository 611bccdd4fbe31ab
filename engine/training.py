"""One training step of the interactive network as in the paper: iterative click rounds, then the loss.

The click rounds use the same simulated user (``misc.clicks.Clicker``) and predictor
(``model.predictor.Predictor``: click maps, previous-heatmap rule, network call) as the evaluation."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from misc.clicks import Clicker, indices_to_mask
from misc.decoding import decode, hard_argmax
from misc.heatmaps import gaussian_heatmaps
from misc.losses import heatmap_bce
from misc.morphology import morphology_loss
from model.predictor import Predictor


@dataclass
class LossTerms:
    """The loss to back-propagate and its parts, detached 0-dim tensors on the loss's device (read
    them with float() when needed: every read waits for the device)."""
    total: torch.Tensor
    bce_main: torch.Tensor
    bce_aux: torch.Tensor
    morph: torch.Tensor


def simulate_click_rounds(predictor, image, clicker, rounds: int) -> torch.Tensor | None:
    """RITM iterative training: ``rounds`` no-grad predictions in eval mode, each making ``clicker``
    click the worst not-yet-clicked keypoint (hard-argmax radial error on the grid).

    Returns the previous heatmap for the training forward, by the predictor's previous-heatmap rule
    for training (Model.prev_heatmap); None (= zeros) when rounds == 0.
    """
    if rounds == 0:
        return None
    net = predictor.net
    was_training = net.training
    net.eval()
    probs = None
    with torch.no_grad():
        for _ in range(rounds):
            probs = predictor.probs(image, clicker.true_rc, clicker.clicked, probs, training=True)
            clicker.click_worst(hard_argmax(probs))
    net.train(was_training)
    return predictor.previous(probs, clicker.clicked, training=True)


def draw_click_rounds(rng: np.random.Generator, train) -> int | None:
    """The number of no-grad click rounds of one training batch, or None for a batch trained without
    any click (probability ``train.zero_click_p``). The extra draw happens only when that is > 0, so
    runs without the switch keep their random stream."""
    if train.zero_click_p > 0 and rng.random() < train.zero_click_p:
        return None
    return int(rng.integers(train.min_click_rounds, train.max_click_rounds + 1))


def is_localisation_epoch(epoch: int, train) -> bool:
    """True for the first ``train.localisation_epochs`` epochs (counted from 1): trained without clicks on
    unhidden images, so that the network learns to find the points from the image alone first."""
    return epoch <= train.localisation_epochs


def start_clicks(batch: dict, true_rc: torch.Tensor, train, rng: np.random.Generator, device,
                 clicks: bool = True) -> tuple[Clicker, int]:
    """The simulated user of one training batch, holding its initial clicks (none in a batch drawn
    without clicks, nor when ``clicks`` is False), and the number of no-grad click rounds to run."""
    rounds = draw_click_rounds(rng, train) if clicks else None
    initial = batch["clicks"] if rounds is not None else [()] * true_rc.shape[0]
    return Clicker(true_rc, indices_to_mask(initial, true_rc.shape[0], true_rc.shape[1], device)), rounds or 0


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
    return LossTerms(total, bce_main.detach(), bce_aux.detach(), morph.detach())


def training_step(net, batch: dict, config, morph_pairs, rng: np.random.Generator, device,
                  clicks: bool = True) -> LossTerms:
    """Forward + loss for one batch (the caller does backward and the optimizer step); with ``clicks``
    False the batch is trained as the protocol's first prediction (no click, no previous heatmap).

    ``net`` may be wrapped in DistributedDataParallel; the no-grad rounds use the inner module.
    """
    predictor = Predictor(getattr(net, "module", net), config)
    image = batch["image"].to(device, non_blocking=True)
    true_rc = batch["coords_rc"].to(device)
    targets = gaussian_heatmaps(true_rc, predictor.size_rc, predictor.heatmap_std)
    clicker, rounds = start_clicks(batch, true_rc, config.Train, rng, device, clicks)
    prev = simulate_click_rounds(predictor, image, clicker, rounds)
    logits, aux_logits = net(image, predictor.click_maps(true_rc, clicker.clicked), prev)
    return compute_loss(logits, aux_logits, targets, true_rc, batch["morph_mask"].to(device), config, morph_pairs)
