"""Synthetic AASCE-like spine X-rays with exact vertebra-corner labels, in the real tree's file formats.

    python -m dataset.synthetic --out /tmp/synth/boostnet_labeldata --num-train 300 --num-test 60 --seed 0

writes ``data/{training,test}/<name>.jpg`` (8-bit grayscale JPEG, IJG quality 75 like the real files),
``labels/<split>/<name>.jpg.mat`` (``p2``: (68, 2) uint16 pixel (x, y), like the real files) and
``labels/<split>/{filenames,landmarks,angles}.csv`` (no header, CRLF, '%.5g', rows sorted by name).
The angles are the three Cobb angles of the stored points by the challenge method (``misc.cobb``).

What an image holds (all sizes follow the real label statistics):

- 17 vertebrae T1..L5 on a smooth scoliotic curve. The curve is defined by the tilt of the spine axis
  along its length: a few "end vertebra" nodes with alternating tilts joined by half-cosine ramps
  (straight, C-, S- or triple curves, main Cobb angle mostly 5..65 degrees). Body widths, heights and
  disc gaps are the medians of the real labels (T1..L5) with random variation; each endplate is
  perpendicular to the local axis (so apical vertebrae are wedged) plus a little noise.
- Vertebral bodies as bright rounded quadrilaterals whose corners are exactly the labels, with brighter
  cortical rims and endplates, pedicle rings, spinous and (lumbar) transverse processes.
- Soft tissue, lungs with diaphragm domes, heart shadow, ribs (posterior and faint anterior), clavicles,
  iliac wings and sacrum, bowel gas, exposure / contrast / gamma changes, blur, noise, collimation
  edges and side markers.

Point order (as the real labels): vertebra v owns points 4v..4v+3 = top-left, top-right, bottom-left,
bottom-right corner as seen in the image. Everything is drawn at a reduced "work" resolution (about
900 rows) and upscaled; every image depends only on (seed, split, index), so the output is the same
bytes for a given seed whatever the number of worker processes.
"""
from __future__ import annotations

import argparse
import functools
import io
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import scipy.io
from PIL import Image

from dataset.aasce_io import LABEL_SUFFIX, LABEL_VARIABLE, NUM_KEYPOINTS, SPLITS, write_label_csvs
from misc.cobb import cobb_angles

NUM_VERTEBRAE = NUM_KEYPOINTS // 4
JPEG_QUALITY = 75  # the real JPEGs carry the IJG quality-75 quantisation table
WORK_ROWS = 900  # rows of the reduced canvas everything is drawn on
IMAGE_ROWS_RANGE = (973, 3755)  # real image heights (min, max)
IMAGE_COLS_RANGE = (355, 1427)  # real image widths (min, max)

# Medians over the 481 real label files, in units of the vertical extent of the spine (upper endplate
# of T1 to lower endplate of L5), listed T1..L5: body width, body height, and the disc gap below each
# vertebra (T1/T2 .. L4/L5). Heights plus gaps sum to about 1.04: the curved path is longer.
BODY_WIDTH = np.array([0.074, 0.069, 0.065, 0.064, 0.065, 0.067, 0.070, 0.072, 0.075, 0.079, 0.083, 0.089,
                       0.093, 0.095, 0.099, 0.104, 0.111])
BODY_HEIGHT = np.array([0.029, 0.032, 0.036, 0.038, 0.041, 0.041, 0.042, 0.043, 0.045, 0.047, 0.049, 0.051,
                        0.052, 0.053, 0.055, 0.057, 0.053])
DISC_GAP = np.array([0.012, 0.013, 0.014, 0.013, 0.013, 0.014, 0.014, 0.014, 0.015, 0.017, 0.019, 0.021,
                     0.023, 0.024, 0.024, 0.024])
# Half width of the rib cage / trunk at each vertebra, in units of the mean body width.
_RIBCAGE_HALF_WIDTH = np.array([2.0, 2.45, 2.75, 2.95, 3.1, 3.2, 3.3, 3.35, 3.35, 3.3, 3.25, 3.15,
                                3.0, 2.95, 2.95, 3.05, 3.25])

# Half width of the trunk's soft tissue (shoulders at the top), same unit.
_TRUNK_HALF_WIDTH = np.array([3.7, 3.65, 3.6, 3.55, 3.5, 3.5, 3.5, 3.5, 3.45, 3.4, 3.35, 3.3, 3.2, 3.15,
                              3.2, 3.35, 3.6])

CURVE_KINDS = ("straight", "C", "S", "triple")
_CURVE_PROBS = (0.10, 0.35, 0.43, 0.12)
_SPLIT_CODES = {"training": 1, "test": 2}


# --------------------------------------------------------------------------------------------------------
# geometry: image size, spine curve, vertebra corners
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpineCurve:
    """Tilt of the spine axis along the spine: 0 = vertical, > 0 = running down to the right (degrees)."""

    kind: str
    node_t: np.ndarray  # increasing positions along the spine, 0 = top of T1 .. 1 = bottom of L5
    node_tilt_deg: np.ndarray

    def tilt_deg(self, t) -> np.ndarray:
        """Axis tilt at positions ``t``: half-cosine ramps between the nodes, constant beyond them."""
        t = np.asarray(t, dtype=np.float64)
        nt, nv = self.node_t, self.node_tilt_deg
        i = np.clip(np.searchsorted(nt, t, side="right") - 1, 0, len(nt) - 2)
        u = np.clip((t - nt[i]) / (nt[i + 1] - nt[i]), 0.0, 1.0)
        return nv[i] + (nv[i + 1] - nv[i]) * (1.0 - np.cos(np.pi * u)) / 2.0


def sample_curve(rng: np.random.Generator) -> SpineCurve:
    """A random scoliotic curve: straight, C, S or triple, main Cobb angle mostly 5..65 degrees."""
    kind = str(rng.choice(CURVE_KINDS, p=_CURVE_PROBS))
    main = float(np.clip(rng.gamma(4.5, 8.0), 5.0, 75.0))  # mean ~36 degrees
    sign = float(rng.choice([-1.0, 1.0]))
    if kind == "straight":
        t = [0.0, rng.uniform(0.3, 0.7), 1.0]
        tilts = list(rng.normal(0.0, 3.0, 3))
    elif kind == "C":
        ta = rng.uniform(0.08, 0.45)
        tb = rng.uniform(max(ta + 0.3, 0.55), 0.97)
        ea, eb = sign * main / 2, -sign * main / 2
        t = [0.0, ta, tb, 1.0]
        tilts = [ea * rng.uniform(0.0, 0.7), ea, eb, eb * rng.uniform(0.0, 0.7)]
    else:
        if kind == "S":
            t_inner = [rng.uniform(0.05, 0.3), rng.uniform(0.4, 0.62), rng.uniform(0.74, 0.97)]
            cobbs = [main, main * rng.uniform(0.5, 1.1)]
            if rng.random() < 0.4:  # main curve lower (thoracolumbar / lumbar)
                cobbs = cobbs[::-1]
        else:
            t_inner = [rng.uniform(0.03, 0.12), rng.uniform(0.22, 0.38), rng.uniform(0.52, 0.68),
                       rng.uniform(0.8, 0.97)]
            cobbs = [rng.uniform(5.0, 25.0), main, main * rng.uniform(0.5, 1.0)]
        tilt = sign * cobbs[0] / 2
        node_tilts = [tilt]
        for k, cobb in enumerate(cobbs):  # alternate the direction of each curve
            tilt = tilt - sign * cobb if k % 2 == 0 else tilt + sign * cobb
            node_tilts.append(tilt)
        t = [0.0, *t_inner, 1.0]
        tilts = [node_tilts[0] * rng.uniform(0.0, 0.6), *node_tilts, node_tilts[-1] * rng.uniform(0.0, 0.6)]
    curve = SpineCurve(kind, np.array(t, dtype=np.float64), np.array(tilts, dtype=np.float64))
    # shift all tilts so that the spine drifts sideways only a little from top to bottom
    drift = rng.normal(0.0, 0.03)
    grid = np.linspace(0.0, 1.0, 512)
    base = curve.tilt_deg(grid)
    lo, hi = -60.0, 60.0
    for _ in range(40):  # bisection: mean(sin(tilt + d)) is increasing in d here
        mid = (lo + hi) / 2
        if np.sin(np.radians(base + mid)).mean() < drift:
            lo = mid
        else:
            hi = mid
    return SpineCurve(kind, curve.node_t, curve.node_tilt_deg + (lo + hi) / 2)


def sample_image_size(rng: np.random.Generator, scale: float = 1.0) -> tuple[int, int]:
    """(rows, cols) spread like the real images (median about 2360 x 854), times ``scale``."""
    if rng.random() < 0.85:
        rows = rng.normal(2330.0, 260.0)
    else:
        rows = rng.uniform(*IMAGE_ROWS_RANGE)
    rows = float(np.clip(rows, *IMAGE_ROWS_RANGE))
    aspect = float(np.clip(np.exp(rng.normal(np.log(2.7), 0.16)), 1.8, 4.3))
    cols = float(np.clip(rows / aspect, *IMAGE_COLS_RANGE))
    return max(64, int(round(rows * scale))), max(32, int(round(cols * scale)))


def spine_corners(rng: np.random.Generator, rows: int, cols: int, curve: SpineCurve) -> np.ndarray:
    """The 68 corners (x, y) in pixels of a spine following ``curve``, centred roughly in the image.

    The spine is placed vertically like the real ones (top of T1 at 1.5-7.5 % of the height, bottom of
    L5 at 88-96.5 %); horizontally its mean is near the middle. The result may stick out sideways for
    strong curves in narrow images: the caller checks and widens the image or draws again.
    """
    y_top = rows * rng.uniform(0.015, 0.075)
    y_bottom = rows * rng.uniform(0.885, 0.965)
    extent = y_bottom - y_top
    t = np.linspace(0.0, 1.0, 2049)
    tilt = np.radians(curve.tilt_deg(t))
    dt = t[1] - t[0]
    cum_sin = np.concatenate([[0.0], np.cumsum((np.sin(tilt[1:]) + np.sin(tilt[:-1])) / 2 * dt)])
    cum_cos = np.concatenate([[0.0], np.cumsum((np.cos(tilt[1:]) + np.cos(tilt[:-1])) / 2 * dt)])
    length = extent / cum_cos[-1]  # path length giving the wanted vertical extent
    path_x, path_y = cum_sin * length, y_top + cum_cos * length

    heights = BODY_HEIGHT * np.exp(rng.normal(0.0, 0.06, NUM_VERTEBRAE))
    gaps = DISC_GAP * np.exp(rng.normal(0.0, 0.12, NUM_VERTEBRAE - 1))
    total = heights.sum() + gaps.sum()
    heights, gaps = heights / total, gaps / total  # fractions of the path
    t_top = np.concatenate([[0.0], np.cumsum(heights[:-1] + gaps)])
    t_bottom = t_top + heights
    widths = BODY_WIDTH * extent * rng.uniform(0.9, 1.1) * np.exp(rng.normal(0.0, 0.03, NUM_VERTEBRAE))

    def endplate(tt, noise_deg):
        phi = np.radians(curve.tilt_deg(tt) + rng.normal(0.0, noise_deg, NUM_VERTEBRAE))
        centre = np.stack([np.interp(tt, t, path_x), np.interp(tt, t, path_y)], axis=1)
        direction = np.stack([np.cos(phi), -np.sin(phi)], axis=1)  # left -> right along the endplate
        half = widths[:, None] / 2 * direction
        return centre - half, centre + half

    top_left, top_right = endplate(t_top, 1.2)
    bottom_left, bottom_right = endplate(t_bottom, 1.2)
    pts = np.stack([top_left, top_right, bottom_left, bottom_right], axis=1).reshape(NUM_KEYPOINTS, 2)
    pts += rng.normal(0.0, 0.0012 * extent, pts.shape)  # the irregularity of real corners
    pts[:, 0] += cols * rng.normal(0.485, 0.03) - pts[:, 0].mean()
    return pts


def _fit_spine(rng: np.random.Generator, rows: int, cols: int, scale: float):
    """Draw a curve and its corners that fit the image (widening it within the real range if needed)."""
    max_cols = max(cols, int(round(IMAGE_COLS_RANGE[1] * scale)))
    for _ in range(50):
        curve = sample_curve(rng)
        pts = spine_corners(rng, rows, cols, curve)
        span = pts[:, 0].max() - pts[:, 0].min()
        widest = int(np.ceil(span / 0.86))
        if widest > max_cols:
            continue
        if widest > cols:
            pts[:, 0] += (widest - cols) / 2
            cols = widest
        shift = 0.0  # pull the spine inside a 7 % margin
        if pts[:, 0].min() < 0.07 * cols:
            shift = 0.07 * cols - pts[:, 0].min()
        elif pts[:, 0].max() > 0.93 * cols:
            shift = 0.93 * cols - pts[:, 0].max()
        pts[:, 0] += shift
        if pts[:, 0].min() >= 0 and pts[:, 0].max() <= cols - 1 and pts[:, 1].max() <= rows - 1:
            return curve, pts, cols
    raise RuntimeError("could not fit a spine into the image in 50 draws")  # pragma: no cover


# --------------------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------------------
_SHIFT = 4  # cv2 drawing with 4 fractional bits


def _fx(points) -> np.ndarray:
    return np.round(np.asarray(points, dtype=np.float64) * (1 << _SHIFT)).astype(np.int32)


def _polyline(layer, points, value, thickness):
    cv2.polylines(layer, [_fx(points)], False, float(value), max(1, int(round(thickness))), cv2.LINE_8, _SHIFT)


def _ellipse(layer, centre, axes, angle_deg, value, thickness=-1, start=0.0, end=360.0):
    cv2.ellipse(layer, tuple(int(v) for v in _fx(centre)), tuple(int(max(v, 1)) for v in _fx(axes)),
                float(angle_deg), float(start), float(end), float(value), int(thickness), cv2.LINE_8, _SHIFT)


def _blur(layer, sigma):
    """Gaussian blur; wide blurs run on a downsampled copy (same look, a fraction of the time)."""
    sigma = max(float(sigma), 0.3)
    factor = int(sigma // 3)
    if factor < 2:
        return cv2.GaussianBlur(layer, (0, 0), sigma)
    rows, cols = layer.shape
    small = cv2.resize(layer, (max(1, cols // factor), max(1, rows // factor)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / factor)
    return cv2.resize(small, (cols, rows), interpolation=cv2.INTER_LINEAR)


def _smooth_field(rng, shape, cells, amplitude):
    """1 + a smooth random field (bicubic upscaling of a coarse random grid)."""
    coarse = rng.normal(0.0, amplitude, cells).astype(np.float32)
    return 1.0 + cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _draw_vertebrae(rng, bone, quads, widths, heights):
    """Vertebral bodies (rounded quadrilaterals with cortical rims), pedicles and processes."""
    rows, cols = bone.shape
    for v, quad in enumerate(quads.astype(np.float32)):  # float32 throughout: half the work of float64
        tl, tr, bl, br = quad
        w, h = float(widths[v]), float(heights[v])
        lumbar = v >= 12
        margin = (0.45 if lumbar else 0.15) * w + 0.3 * h + 2
        x0 = int(max(0, np.floor(quad[:, 0].min() - margin)))
        x1 = int(min(cols, np.ceil(quad[:, 0].max() + margin) + 1))
        y0 = int(max(0, np.floor(quad[:, 1].min() - margin)))
        y1 = int(min(rows, np.ceil(quad[:, 1].max() + margin) + 1))
        if x1 <= x0 or y1 <= y0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        # signed distances to the four edges (outward normals), clockwise TL -> TR -> BR -> BL
        ring = [tl, tr, br, bl]
        dist = []
        for a, b in zip(ring, ring[1:] + ring[:1]):
            edge = b - a
            normal = np.array([edge[1], -edge[0]]) / (np.hypot(*edge) + 1e-9)
            dist.append((xx - a[0]) * normal[0] + (yy - a[1]) * normal[1])
        dist = np.stack(dist)
        # local frame: a across (-0.5 left .. 0.5 right), b along (-0.5 top .. 0.5 bottom)
        centre = quad.mean(axis=0)
        across = (tr + br - tl - bl) / 2
        along = (bl + br - tl - tr) / 2
        inv = np.linalg.inv(np.stack([across, along], axis=1)).astype(np.float32)
        px, py = xx - centre[0], yy - centre[1]
        a = inv[0, 0] * px + inv[0, 1] * py
        b = inv[1, 0] * px + inv[1, 1] * py
        waist = rng.uniform(0.02, 0.06) * w * np.clip(1.0 - (2.0 * b) ** 2, 0.0, 1.0)
        dist[1] += waist  # concave sides: the body is narrower at mid-height than at its endplates
        dist[3] += waist
        soft = 0.05 * min(w, h) + 0.3  # corner rounding: the corners end soft * log(2) inside the labels
        sdf = soft * np.log(np.exp(dist / soft).sum(axis=0))  # smooth maximum -> rounded corners
        rim_w = max(0.7, 0.06 * min(w, h))
        inside = 1.0 / (1.0 + np.exp(np.clip(sdf / 0.5, -30, 30)))
        rim = np.exp(-((sdf + 0.5 * rim_w) / rim_w) ** 2)  # cortex: bright band just inside the outline
        endplate = np.exp(-(np.minimum(np.abs(dist[0]), np.abs(dist[2])) / rim_w) ** 2) * inside
        strength = rng.uniform(0.75, 1.0) if lumbar else rng.uniform(0.35, 0.6) + 0.02 * v
        value = rng.uniform(0.3, 0.5) * inside + rng.uniform(0.3, 0.55) * rim + rng.uniform(0.2, 0.4) * endplate
        for side in (-1.0, 1.0):  # pedicles: oval rings in the upper lateral parts
            r = np.sqrt(((a - side * 0.3) / 0.1) ** 2 + ((b + 0.1) / 0.2) ** 2)
            value += rng.uniform(0.1, 0.25) * np.exp(-((r - 1.0) / 0.35) ** 2)
        value += rng.uniform(0.08, 0.2) * np.exp(-((a / 0.07) ** 2 + ((b - 0.25) / 0.3) ** 2) * 2)  # spinous
        if lumbar:  # transverse processes sticking out sideways
            tp = np.exp(-(((np.abs(a) - 0.62) / 0.17) ** 4 + ((b + 0.05) / 0.12) ** 2))
            value += rng.uniform(0.25, 0.45) * tp * (np.abs(a) > 0.45)
        bone[y0:y1, x0:x1] += (strength * value).astype(np.float32)


def render_xray(rng: np.random.Generator, rows: int, cols: int, corners_xy: np.ndarray) -> np.ndarray:
    """A uint8 (rows, cols) spine X-ray whose vertebral bodies have exactly ``corners_xy`` as corners."""
    work_rows = min(rows, WORK_ROWS)
    fy = rows / work_rows
    work_cols = max(8, int(round(cols / fy)))
    fx = cols / work_cols
    pts = (np.asarray(corners_xy, dtype=np.float64) + 0.5) / [fx, fy] - 0.5  # cv2.resize pixel centres
    quads = pts.reshape(NUM_VERTEBRAE, 4, 2)
    tl, tr, bl, br = quads[:, 0], quads[:, 1], quads[:, 2], quads[:, 3]
    centres = quads.mean(axis=1)
    widths = (np.linalg.norm(tr - tl, axis=1) + np.linalg.norm(br - bl, axis=1)) / 2
    heights = (np.linalg.norm(bl - tl, axis=1) + np.linalg.norm(br - tr, axis=1)) / 2
    right = (tr + br - tl - bl) / 2
    right /= np.linalg.norm(right, axis=1, keepdims=True)  # unit vector left -> right of each vertebra
    down = np.stack([-right[:, 1], right[:, 0]], axis=1)  # unit vector top -> bottom
    w0 = float(widths.mean())
    shape = (work_rows, work_cols)
    yy, xx = np.mgrid[0:work_rows, 0:work_cols].astype(np.float32)
    row_index = np.arange(work_rows, dtype=np.float64)
    # spine centre and rib-cage half width for every row (flat beyond T1 / L5)
    spine_x = np.interp(row_index, centres[:, 1], centres[:, 0]).astype(np.float32)[:, None]
    ribcage = (_RIBCAGE_HALF_WIDTH * rng.uniform(0.9, 1.12) * w0)
    cage_x = np.interp(row_index, centres[:, 1], ribcage).astype(np.float32)[:, None]
    y_of = centres[:, 1]
    mid_h = float(heights.mean())

    # --- soft tissue: elliptical trunk cross-section, abdomen denser, paraspinal muscles
    trunk_centre = 0.6 * spine_x + 0.4 * (work_cols / 2)
    trunk_half = np.interp(row_index, centres[:, 1], _TRUNK_HALF_WIDTH * rng.uniform(0.95, 1.3) * w0)
    trunk_half = trunk_half.astype(np.float32)[:, None]
    thickness = np.sqrt(np.clip(1.0 - ((xx - trunk_centre) / trunk_half) ** 2, 0.0, 1.0))
    diaphragm = float(y_of[rng.integers(9, 12)] + rng.uniform(-0.5, 0.5) * mid_h)
    abdomen = 1.0 / (1.0 + np.exp(-(yy - diaphragm) / (1.5 * mid_h)))
    soft = thickness * (rng.uniform(0.8, 1.1) + rng.uniform(0.35, 0.75) * abdomen)
    soft += rng.uniform(0.15, 0.3) * np.exp(-(((xx - spine_x) / (1.2 * w0)) ** 2))

    # --- lungs: two dark lobes above the diaphragm domes; heart shadow
    lungs = np.zeros(shape, np.float32)
    top = float(y_of[0] - rng.uniform(0.5, 2.5) * mid_h)
    for side in (-1.0, 1.0):
        dome = diaphragm + (-0.8 if side < 0 else 0.3) * mid_h  # patient's right (image left) is higher
        ys = np.linspace(top, dome + 2.0 * mid_h, 24)
        sx = np.interp(ys, y_of, centres[:, 0])
        cx = np.interp(ys, y_of, ribcage)
        medial = sx + side * (rng.uniform(0.8, 1.1) * w0 + 0.3 * w0 * np.linspace(0, 1, 24))
        lateral = sx + side * cx * 0.93
        taper = np.clip((ys - top) / (4.0 * mid_h), 0.25, 1.0)  # narrow apex
        lateral = medial + (lateral - medial) * taper
        u = np.linspace(0.0, 1.0, 16)
        floor_x = lateral[-1] + (medial[-1] - lateral[-1]) * u
        floor_y = dome + 2.0 * mid_h - 2.6 * mid_h * np.sin(np.pi * (0.15 + 0.7 * u)) - 0.4 * mid_h * u
        poly = np.concatenate([np.stack([medial, ys], 1), np.stack([floor_x[::-1], floor_y[::-1]], 1)[1:],
                               np.stack([lateral[::-1], ys[::-1]], 1)[1:]])
        cv2.fillPoly(lungs, [_fx(poly)], 1.0, cv2.LINE_8, _SHIFT)
    lungs = _blur(lungs, 0.5 * w0)
    heart = np.zeros(shape, np.float32)
    hv = int(rng.integers(6, 9))
    _ellipse(heart, (centres[hv, 0] + rng.uniform(0.5, 1.1) * w0, y_of[hv] + rng.uniform(0, 2) * mid_h),
             (rng.uniform(1.6, 2.3) * w0, rng.uniform(1.3, 1.8) * w0), rng.uniform(-25, 10), 1.0)
    heart = _blur(heart, 0.6 * w0)
    soft = soft * (1.0 - rng.uniform(0.7, 0.9) * lungs) + rng.uniform(0.25, 0.45) * heart * thickness

    # --- bowel gas
    gas = np.zeros(shape, np.float32)
    for _ in range(int(rng.integers(4, 22))):
        gy = rng.uniform(diaphragm + 2 * mid_h, work_rows * 1.05)
        gx = float(np.interp(gy, y_of, centres[:, 0]) + rng.normal(0, 1.6) * w0)
        _ellipse(gas, (gx, gy), (rng.uniform(0.12, 0.6) * w0, rng.uniform(0.1, 0.4) * w0), rng.uniform(0, 180),
                 rng.uniform(0.4, 1.0))
    soft -= rng.uniform(0.15, 0.4) * _blur(gas, 0.12 * w0) * abdomen

    # --- bones: ribs, clavicles, pelvis, vertebrae
    bone = np.zeros(shape, np.float32)
    rib_t = np.linspace(0.0, 1.0, 28)[:, None]
    for v in range(12):
        length = (ribcage[v] - 0.55 * widths[v]) * (0.8, 0.9, 1, 1, 1, 1, 1, 1, 1, 0.95, 0.6, 0.45)[v]
        thick = (0.34 + 0.08 * v / 11) * heights[v] * rng.uniform(0.85, 1.15)
        droop = rng.uniform(0.25, 0.45) + 0.25 * (v < 2)
        rib_value = rng.uniform(0.3, 0.45)
        for side in (-1.0, 1.0):
            out = side * right[v]
            start = centres[v] + side * (0.55 * widths[v]) * right[v] - 0.1 * heights[v] * down[v]
            posterior = (start + out * length * rib_t
                         + down[v] * length * (-0.1 * np.sin(0.9 * np.pi * rib_t) + droop * rib_t ** 3))
            _polyline(bone, posterior, rib_value, thick)
            _polyline(bone, posterior, -0.3 * rib_value, thick * 0.45)
            end = posterior[-1]
            if v < 10:  # anterior rib: from the side back towards the middle, downwards
                anterior = (end + down[v] * 0.12 * length * np.sin(np.pi * rib_t / 2)
                            - out * length * 0.5 * rib_t ** 1.5 + down[v] * length * 0.3 * rib_t)
                _polyline(bone, anterior, 0.2 * rib_value, thick * 0.8)
    if rng.random() < 0.75:  # clavicles
        for side in (-1.0, 1.0):
            start = centres[1] + side * 0.8 * w0 * right[1]
            tt = np.linspace(0.0, 1.0, 20)[:, None]
            rise = rng.uniform(0.5, 1.5) * w0
            clav = start + np.array([side * 3.5 * w0, 0.0]) * tt - np.array([0.0, 1.0]) * (
                rise * tt - 0.2 * w0 * np.sin(np.pi * tt))
            _polyline(bone, clav, rng.uniform(0.25, 0.4), 0.4 * mid_h)
    for side in (-1.0, 1.0):  # iliac wings with a bright crest, sacrum below L5
        centre = (centres[16] + side * rng.uniform(1.9, 2.4) * w0 * right[16]
                  + rng.uniform(1.5, 2.5) * heights[16] * down[16])
        axes = (rng.uniform(1.2, 1.5) * w0, rng.uniform(0.9, 1.2) * w0)
        angle = side * rng.uniform(5, 25)
        _ellipse(bone, centre, axes, angle, rng.uniform(0.08, 0.16))
        _ellipse(bone, centre, axes, angle, rng.uniform(0.15, 0.3), max(1, int(0.08 * w0)), 180, 360)
    sacrum = np.array([bl[16] - 0.1 * widths[16] * right[16], br[16] + 0.1 * widths[16] * right[16],
                       (bl[16] + br[16]) / 2 + 2.5 * heights[16] * down[16]])
    cv2.fillPoly(bone, [_fx(sacrum)], float(rng.uniform(0.12, 0.25)), cv2.LINE_8, _SHIFT)
    bone = _blur(bone, 0.035 * w0)
    _draw_vertebrae(rng, bone, quads, widths, heights)
    bone = _blur(bone, rng.uniform(0.3, 0.8)) * _smooth_field(rng, shape, (6, 3), 0.12)
    bone *= _smooth_field(rng, shape, (work_rows // 12, max(2, work_cols // 12)), 0.12)  # trabecular texture

    # --- exposure: attenuation -> intensity, window, gamma, noise, blur, collimation, marker
    attenuation = soft * rng.uniform(0.7, 1.0) + bone * rng.uniform(0.7, 1.2)
    attenuation *= _smooth_field(rng, shape, (4, 3), 0.08)
    image = 1.0 - np.exp(-attenuation * rng.uniform(0.6, 1.2))
    sample = image[::3, ::3]
    lo, hi = np.percentile(sample, [rng.uniform(0.5, 6.0), rng.uniform(99.0, 99.95)])
    image = np.clip((image - lo) / max(hi - lo, 1e-6), 0.0, 1.0) ** rng.uniform(0.8, 1.8)
    image = rng.uniform(0.0, 0.08) + rng.uniform(0.8, 1.0) * image
    image += rng.normal(0.0, rng.uniform(0.008, 0.035), shape).astype(np.float32)
    if rng.random() < 0.6:
        image = _blur(image, rng.uniform(0.3, 1.3))
    if rng.random() < 0.25:  # collimator shadow on one side
        edge = int(rng.uniform(0.01, 0.06) * work_cols)
        if rng.random() < 0.5:
            image[:, :edge] *= 0.15
        else:
            image[:, work_cols - edge:] *= 0.15
    if rng.random() < 0.5:  # side / orientation marker
        text = str(rng.choice(["L", "R", "SUP", "AP", "L AP"]))
        corner = rng.uniform(0.02, 0.12) if rng.random() < 0.5 else rng.uniform(0.75, 0.85)
        org = (int(corner * work_cols), int(rng.uniform(0.03, 0.08) * work_rows))
        mask = np.zeros(shape, np.uint8)  # putText draws on 8-bit images only
        cv2.putText(mask, text, org, cv2.FONT_HERSHEY_SIMPLEX, work_cols / 900 + 0.4, 255, 2, cv2.LINE_AA)
        image = np.maximum(image, mask.astype(np.float32) / 255.0 * rng.uniform(0.8, 1.0))
    full = cv2.resize(image * np.float32(255.0), (cols, rows), interpolation=cv2.INTER_LINEAR)
    grain = rng.standard_normal(((rows + 1) // 2, (cols + 1) // 2), dtype=np.float32)  # 2x2-pixel film grain
    grain *= np.float32(rng.uniform(0.5, 3.0))
    full += cv2.resize(grain, (cols, rows), interpolation=cv2.INTER_NEAREST)
    return np.clip(full, 0, 255, out=full).astype(np.uint8)


# --------------------------------------------------------------------------------------------------------
# one sample, one tree
# --------------------------------------------------------------------------------------------------------
@dataclass
class SyntheticSample:
    name: str  # image file name, e.g. "synthetic-0-t0003 B AP.jpg"
    image: np.ndarray  # uint8 (rows, cols)
    points_xy: np.ndarray  # uint16 (68, 2), as stored in p2
    angles_deg: list[float]  # Cobb angles of points_xy (challenge method)
    curve_kind: str


def sample_name(rng: np.random.Generator, seed: int, split: str, index: int) -> str:
    """A unique name shaped like the real ones: spaces, a letter, sometimes lower case or ' (2)'."""
    letter = str(rng.choice(list("ABCDE")))
    suffix = f" {letter} AP" if rng.random() > 0.1 else f" {letter.lower()} ap"
    if rng.random() < 0.08:
        suffix += " (2)"
    return f"synthetic-{seed}-{split[:2]}{index:04d}{suffix}.jpg"


def make_sample(seed: int, split: str, index: int, scale: float = 1.0) -> SyntheticSample:
    """One synthetic image with its labels; a pure function of (seed, split, index, scale)."""
    rng = np.random.default_rng([int(seed), _SPLIT_CODES[split], int(index)])
    name = sample_name(rng, seed, split, index)
    rows, cols = sample_image_size(rng, scale)
    curve, pts, cols = _fit_spine(rng, rows, cols, scale)
    points = np.round(pts).astype(np.uint16)  # the real labels are whole pixels stored as uint16
    image = render_xray(rng, rows, cols, points.astype(np.float64))
    angles = cobb_angles(points.astype(np.float64), rows)["angles"]
    return SyntheticSample(name, image, points, angles, curve.kind)


def _mat_bytes(points: np.ndarray) -> bytes:
    """A MATLAB 5 file holding ``p2``, with a fixed header text (scipy stamps the time) for equal bytes."""
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {LABEL_VARIABLE: points})
    data = bytearray(buffer.getvalue())
    header = b"MATLAB 5.0 MAT-file, Platform: synthetic, Created by: dataset.synthetic"
    data[:116] = header.ljust(116, b"\x00")
    return bytes(data)


def _write_sample(job: tuple[str, int, int, float, str]) -> tuple[str, list[int], np.ndarray, list[float]]:
    """Make one sample and write its JPEG and .mat; return what the CSV files need."""
    split, index, seed, scale, root = job
    sample = make_sample(seed, split, index, scale)
    root = Path(root)
    Image.fromarray(sample.image, mode="L").save(root / "data" / split / sample.name, "JPEG", quality=JPEG_QUALITY)
    (root / "labels" / split / (sample.name + LABEL_SUFFIX)).write_bytes(_mat_bytes(sample.points_xy))
    return sample.name, list(sample.image.shape), sample.points_xy, sample.angles_deg


def generate_tree(
    out_root: str | os.PathLike,
    num_train: int = 24,
    num_test: int = 8,
    seed: int = 0,
    workers: int = 1,
    scale: float = 1.0,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, list[str]]:
    """Write a synthetic ``boostnet_labeldata`` tree (``data/`` and ``labels/``) into ``out_root``.

    ``out_root`` plays the role of the real ``boostnet_labeldata`` folder. Refuses (FileExistsError) when
    ``out_root/data`` or ``out_root/labels`` exists, unless ``overwrite`` (which removes those two).
    ``scale`` < 1 shrinks the images (quick tests); the bytes depend only on (seed, scale), not on
    ``workers``. Returns the image names per split, sorted as in filenames.csv.
    """
    if num_train < 0 or num_test < 0:
        raise ValueError(f"num_train and num_test must be >= 0, got {num_train}, {num_test}")
    if not 0 < scale <= 1.5:
        raise ValueError(f"scale must be in (0, 1.5], got {scale}")
    root = Path(out_root)
    existing = [root / d for d in ("data", "labels") if (root / d).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]}: already exists; choose an empty --out folder or pass --overwrite")
    for folder in existing:
        shutil.rmtree(folder)
    for split in SPLITS:
        (root / "data" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    counts = {"training": num_train, "test": num_test}
    jobs = [(split, i, int(seed), float(scale), str(root)) for split in SPLITS for i in range(counts[split])]
    workers = max(1, min(int(workers), len(jobs)))
    if progress:
        from tqdm.auto import tqdm

        bar = functools.partial(tqdm, total=len(jobs), desc="synthetic", unit="img")
    else:
        def bar(iterable):
            return iterable
    if workers == 1:
        results = [_write_sample(job) for job in bar(jobs)]
    else:
        context = multiprocessing.get_context("spawn")  # see dataset.preprocess.load_samples
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            results = list(bar(pool.map(_write_sample, jobs, chunksize=max(1, len(jobs) // (workers * 8)))))
    names = {}
    offset = 0
    for split in SPLITS:
        rows = sorted(results[offset: offset + counts[split]], key=lambda r: r[0])
        offset += counts[split]
        write_label_csvs(root / "labels" / split, [r[0] for r in rows], [r[2] for r in rows],
                         [r[1] for r in rows], [r[3] for r in rows])
        names[split] = [r[0] for r in rows]
    return names


def main(argv: Sequence[str] | None = None) -> int:
    from dataset.preprocess import available_cpus

    parser = argparse.ArgumentParser(
        prog="python -m dataset.synthetic",
        description="Write a synthetic AASCE 'boostnet_labeldata' tree (data/, labels/) with spine X-ray-like "
                    "JPEGs and exact corner labels, in the real files' formats.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", required=True, help="the folder to fill (plays boostnet_labeldata)")
    parser.add_argument("--num-train", type=int, default=24, help="images in data/training")
    parser.add_argument("--num-test", type=int, default=8, help="images in data/test")
    parser.add_argument("--seed", type=int, default=0, help="every image is a pure function of seed and index")
    parser.add_argument("--workers", type=int, default=available_cpus(), help="processes")
    parser.add_argument("--scale", type=float, default=1.0, help="image size factor (< 1 for quick tests)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing data/ and labels/ in --out")
    parser.add_argument("--sample-png", default=None, help="also save the first training image as this PNG")
    args = parser.parse_args(argv)
    if args.num_train < 0 or args.num_test < 0 or args.workers < 1:
        parser.error("--num-train/--num-test must be >= 0 and --workers >= 1")
    started = time.perf_counter()
    try:
        names = generate_tree(args.out, args.num_train, args.num_test, args.seed, args.workers, args.scale,
                              args.overwrite, progress=True)
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    print(f"wrote {len(names['training'])} training + {len(names['test'])} test images to {args.out} "
          f"in {seconds:.1f} s")
    if args.sample_png and names["training"]:
        Image.open(Path(args.out) / "data" / "training" / names["training"][0]).save(args.sample_png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
