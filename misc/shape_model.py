"""A statistical shape model of the 68 vertebra corners and its per-point residual (pure numpy).

An error-score baseline (issue 39): a point far from where the shape model would put it, given the
other points, is suspicious.

Frames: ``points_xy`` / ``shapes_xy`` are (x, y) in ORIGINAL image pixels, in the AASCE order (see
``misc.cobb``). Inside the model a shape is the complex vector z = x + i y of its 68 points, centred;
the model frame is the one of the unit-norm mean shape ``mean`` (sum |mean|^2 = 1).

Fit (generalised Procrustes analysis, then PCA in the tangent space, as in Cootes' active shape models):
every training shape is centred, then rotated and scaled by the complex factor 1 / p, p = <mean, z>
(= sum conj(mean) * z), which rotates it as the least-squares Procrustes fit to the mean does and
scales it so that its projection on the mean is 1 (the tangent-space projection); the mean is the
normalised average of the aligned shapes, repeated until it stops moving. The aligned shapes minus the
mean are orthogonal to the mean and to its rotation by 90 degrees; their first ``num_components``
principal directions are the components.

Residual of a shape: align it the same way (x = z / p), reconstruct x from the mean and the components
(orthogonal projection), and take each point's distance between x and its reconstruction, times |p| to
come back to the image's pixels. A shape T(mean + components . b) for any similarity T has residual 0;
the residual moves with the image's scale and not with its position or rotation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_KEYPOINTS = 68
DEFAULT_COMPONENTS = 8

__all__ = ["DEFAULT_COMPONENTS", "ShapeModel", "fit_shape_model"]


def _as_shapes(shapes_xy, name: str) -> np.ndarray:
    """(N, 68, 2) float64 or ValueError saying what is wrong."""
    try:
        shapes = np.array(shapes_xy, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array of shape (N, {NUM_KEYPOINTS}, 2): {exc}") from None
    if shapes.ndim != 3 or shapes.shape[1:] != (NUM_KEYPOINTS, 2):
        raise ValueError(f"{name} must have shape (N, {NUM_KEYPOINTS}, 2) (x, y per keypoint), got {shapes.shape}")
    if not np.isfinite(shapes).all():
        raise ValueError(f"{name} has NaN or infinite coordinates")
    return shapes


def _centred_complex(shapes: np.ndarray) -> np.ndarray:
    """(N, 68, 2) x, y -> (N, 68) complex, each shape's centroid at 0."""
    z = shapes[..., 0] + 1j * shapes[..., 1]
    return z - z.mean(axis=-1, keepdims=True)


def _projections(z: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """p = <mean, z> per shape; raises when a shape has no part along the mean (e.g. all points equal)."""
    p = (np.conj(mean) * z).sum(axis=-1)
    if (np.abs(p) <= 1e-12 * np.sqrt((np.abs(z) ** 2).sum(axis=-1))).any():
        raise ValueError("a shape cannot be aligned to the mean shape (its points coincide or are orthogonal "
                         "to the mean)")
    return p


def _as_real(x: np.ndarray) -> np.ndarray:
    """(..., 68) complex -> (..., 136) real, x0, y0, x1, y1, ..."""
    return np.stack([x.real, x.imag], axis=-1).reshape(*x.shape[:-1], -1)


@dataclass(frozen=True)
class ShapeModel:
    """mean: (68,) complex, centred, unit norm; components: (k, 136) orthonormal rows over (x0, y0, x1, ...)
    in the model frame; variances: (k,) of the training shapes along them."""

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray

    @property
    def num_components(self) -> int:
        return int(self.components.shape[0])

    def residuals_xy(self, points_xy) -> np.ndarray:
        """(68, 2): the points minus their reconstruction, in the image's pixels and axes."""
        z = _centred_complex(_as_shapes(np.asarray(points_xy, dtype=np.float64)[None], "points_xy"))[0]
        p = _projections(z, self.mean)
        x = z / p
        offset = _as_real(x - self.mean)
        residual = offset - self.components.T @ (self.components @ offset)
        residual_model = residual[0::2] + 1j * residual[1::2]
        residual_image = residual_model * p  # back to the image: undo the rotation and scale
        return np.stack([residual_image.real, residual_image.imag], axis=-1)

    def residual_scores(self, points_xy) -> np.ndarray:
        """(68,): each point's distance to its reconstruction from the model, in the image's pixels."""
        return np.linalg.norm(self.residuals_xy(points_xy), axis=-1)


def fit_shape_model(shapes_xy, num_components: int = DEFAULT_COMPONENTS, max_iterations: int = 100,
                    tolerance: float = 1e-12) -> ShapeModel:
    """Fit on N training shapes (N, 68, 2) in original pixels (x, y); see the module docstring."""
    shapes = _as_shapes(shapes_xy, "shapes_xy")
    if not 0 <= int(num_components) <= min(len(shapes) - 1, 2 * NUM_KEYPOINTS - 4):
        raise ValueError(f"num_components must be in 0..{min(len(shapes) - 1, 2 * NUM_KEYPOINTS - 4)} for "
                         f"{len(shapes)} training shapes, got {num_components}")
    z = _centred_complex(shapes)
    norms = np.sqrt((np.abs(z) ** 2).sum(axis=-1))
    if (norms == 0).any():
        raise ValueError(f"training shapes {np.flatnonzero(norms == 0).tolist()} have all points at one place")
    mean = z[0] / norms[0]
    for _ in range(max_iterations):
        aligned = z / _projections(z, mean)[:, None]
        new_mean = aligned.mean(axis=0)
        new_mean = new_mean / np.sqrt((np.abs(new_mean) ** 2).sum())
        new_mean = new_mean / np.exp(1j * np.angle((np.conj(mean) * new_mean).sum()))  # keep the mean's rotation
        moved = np.sqrt((np.abs(new_mean - mean) ** 2).sum())
        mean = new_mean
        if moved < tolerance:
            break
    aligned = z / _projections(z, mean)[:, None]
    offsets = _as_real(aligned - mean)
    _, singular, rows = np.linalg.svd(offsets, full_matrices=False)
    k = int(num_components)
    variances = singular[:k] ** 2 / max(len(shapes) - 1, 1)
    return ShapeModel(mean=mean, components=rows[:k].copy(), variances=variances)


def complete_shape(model: ShapeModel, points_xy, known, iterations: int = 20, ridge: float = 1.0) -> np.ndarray:
    """(68, 2): the shape model's best fit to the ``known`` points (68,) bool, with every point taken from
    the fit; the known points are the evidence, the others are where the model puts them.

    Fits z_k = t + s (mean_k + sum_j b_j psi_jk) (t, s complex: translation, rotation + scale; b real
    coefficients, ridge ``ridge`` / variance_j) to the known points by alternating least squares: with s
    fixed (t, b) is linear, with b fixed (t, s) is. Needs at least 3 known points.
    """
    points = _as_shapes(np.asarray(points_xy, dtype=np.float64)[None], "points_xy")[0]
    known = np.asarray(known, dtype=bool)
    if known.shape != (NUM_KEYPOINTS,) or known.sum() < 3:
        raise ValueError(f"known must be ({NUM_KEYPOINTS},) bool with at least 3 True, got {known.shape}, "
                         f"{int(known.sum())} known")
    z = points[:, 0] + 1j * points[:, 1]
    psi = model.components[:, 0::2] + 1j * model.components[:, 1::2]  # (k, 68) complex components
    zk, mk, pk = z[known], model.mean[known], psi[:, known]
    penalty = ridge / np.maximum(model.variances, 1e-12)
    # start: similarity of the mean alone, by complex least squares on [1, mean]
    design = np.stack([np.ones_like(mk), mk], axis=1)
    (t, s), *_ = np.linalg.lstsq(design, zk, rcond=None)
    b = np.zeros(model.num_components)
    for _ in range(iterations):
        if model.num_components:
            # (t, b) with s fixed: z - s m = t + sum_j b_j (s psi_j); real unknowns Re t, Im t, b
            target = zk - s * mk
            columns = [np.ones_like(zk), 1j * np.ones_like(zk)] + [s * pk[j] for j in range(model.num_components)]
            a = np.stack([np.concatenate([c.real, c.imag]) for c in columns], axis=1)
            rhs = np.concatenate([target.real, target.imag])
            reg = np.diag(np.concatenate([[0.0, 0.0], penalty * abs(s) ** 2]))
            solution = np.linalg.solve(a.T @ a + reg, a.T @ rhs)
            t, b = solution[0] + 1j * solution[1], solution[2:]
        shape = mk + b @ pk if model.num_components else mk
        (t, s), *_ = np.linalg.lstsq(np.stack([np.ones_like(shape), shape], axis=1), zk, rcond=None)
    full = t + s * (model.mean + (b @ psi if model.num_components else 0))
    return np.stack([full.real, full.imag], axis=-1)
