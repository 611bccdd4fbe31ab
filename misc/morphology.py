"""Morphology features (corner distances and angles) and the morphology-aware loss of the paper."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def normalise_rc(coords_rc: torch.Tensor, size_rc) -> torch.Tensor:
    """Rows divided by the grid height, cols by its width."""
    scale = torch.tensor([float(size_rc[0]), float(size_rc[1])], device=coords_rc.device, dtype=coords_rc.dtype)
    return coords_rc / scale


def safe_norm(vectors: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over the last axis with a zero (not NaN) gradient where the vector is zero."""
    squared = (vectors ** 2).sum(-1)
    nonzero = squared > 0
    return torch.where(nonzero, squared.clamp_min(1e-30).sqrt(), torch.zeros_like(squared))


def pair_distances(points: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """(B, K, 2), (P, 2) index pairs -> (B, P) distances."""
    return safe_norm(points[:, pairs[:, 1]] - points[:, pairs[:, 0]])


def triplet_angle_vectors(points: torch.Tensor, triplets: torch.Tensor) -> torch.Tensor:
    """(B, K, 2) (row, col), (T, 3) triplets (x, y, z) -> (B, T, 2) (cos t, sin t).

    t is the angle at the vertex y from direction y->x to direction y->z, each direction's angle
    measured as atan2(row, col + 1e-8) like the official code (the epsilon keeps atan2 finite and
    its gradient defined when two points coincide).
    """
    x, y, z = (points[:, triplets[:, i]] for i in range(3))
    to_x, to_z = x - y, z - y
    angle_x = torch.atan2(to_x[..., 0], to_x[..., 1] + 1e-8)
    angle_z = torch.atan2(to_z[..., 0], to_z[..., 1] + 1e-8)
    delta = angle_z - angle_x
    return torch.stack((torch.cos(delta), torch.sin(delta)), -1)


def morphology_loss(pred_rc: torch.Tensor, true_rc: torch.Tensor, size_rc, pairs: torch.Tensor,
                    triplets: torch.Tensor, distance_lambda: float, angle_lambda: float,
                    sample_mask: torch.Tensor | None = None, distance_l1: bool = True) -> torch.Tensor:
    """lambda_d x mean|d_pred - d_true| + lambda_a x mean(1 - cos(v_pred, v_true)).

    Coordinates are (row, col) on the ``size_rc`` grid and get normalised by it. ``sample_mask``
    (B,) bool selects the samples that take part (the official code uses only non-augmented
    ones); with no sample selected the loss is a zero that still belongs to the graph.
    """
    if sample_mask is not None:
        if not bool(sample_mask.any()):
            return pred_rc.sum() * 0.0
        pred_rc, true_rc = pred_rc[sample_mask], true_rc[sample_mask]
    pred_n, true_n = normalise_rc(pred_rc, size_rc), normalise_rc(true_rc.detach(), size_rc)
    pred_d, true_d = pair_distances(pred_n, pairs), pair_distances(true_n, pairs)
    dist_term = F.l1_loss(pred_d, true_d) if distance_l1 else F.mse_loss(pred_d, true_d)
    pred_v = triplet_angle_vectors(pred_n, triplets).reshape(-1, 2)
    true_v = triplet_angle_vectors(true_n, triplets).reshape(-1, 2)
    angle_term = (1.0 - F.cosine_similarity(pred_v, true_v, dim=-1, eps=1e-8)).mean()
    return distance_lambda * dist_term + angle_lambda * angle_term
