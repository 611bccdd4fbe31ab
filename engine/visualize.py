"""Pictures of the interactive revision: one PNG strip per test image, to look at before trusting a number.

Each strip has two rows: model revision and manual revision after e.g. 0, 1, 3 and 5 clicks. Every panel
shows the X-ray with the true points (green), the predicted points and vertebra outlines (red), the clicked
points (yellow stars), and the Cobb lines: for each of the three Cobb angles the direction lines of its two
bounding vertebrae (angle 1 cyan solid, angle 2 magenta dashed, angle 3 orange dotted, numbered at their
right end), with the angle values in the panel title. The first panel of the model row is the truth (true
outlines and Cobb lines); the first panel of the manual row is the bare X-ray.

Frames: :func:`render_strip` draws on the image it is given, at any resolution; every coordinate passed to it
is (x, y) in THAT image's pixels. The Cobb angles are computed in original pixels, so pass ``raw_size_rc``
(the original (rows, cols)) whenever the displayed image is a resized copy: the preprocessed 512x256 arrays
are resized anisotropically, and angles measured on them would differ. :func:`write_strips` shows the
preprocessed array of each image (``np.load(image_dir / name)``) and rescales the network-grid coordinates
of ``engine.evaluation.evaluate`` to it.

Drawing uses matplotlib's object API with the Agg canvas (no pyplot, no global backend change); files are
written atomically.
"""
from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from misc.cobb import NUM_KEYPOINTS, cobb_angles, smape_per_image
from misc.frames import grid_rc_to_original_xy

TRUTH_COLOUR = "#22dd22"
PRED_COLOUR = "#ff3030"
CLICK_COLOUR = "#ffe600"
COBB_STYLES = (("#00e5ff", "-"), ("#ff40ff", "--"), ("#ff9900", ":"))  # angle 1, 2, 3
DEFAULT_CLICKS = (0, 1, 3, 5)
LEGEND_LABELS = ("truth", "prediction", "clicked", "Cobb angle 1", "Cobb angle 2", "Cobb angle 3")
LEGEND_ENTRY_IN = 1.15  # width of one legend entry at fontsize 7, inches

__all__ = ["Panel", "render_strip", "write_strips", "strip_panels", "DEFAULT_CLICKS"]


@dataclass(frozen=True)
class Panel:
    """One picture of a strip.

    ``pred_xy``: (K, 2) predicted (x, y) in the displayed image's pixels, or None for a truth panel (true
    outlines and true Cobb lines). ``clicked``: keypoint indices clicked so far (drawn as stars).
    ``show_truth``: False for a bare image (no annotations at all when ``pred_xy`` is None too).
    """

    title: str
    pred_xy: np.ndarray | None = None
    clicked: Sequence[int] = ()
    show_truth: bool = True


def _as_panel(panel) -> Panel:
    if isinstance(panel, Panel):
        return panel
    if isinstance(panel, (tuple, list)) and 1 <= len(panel) <= 4:
        return Panel(*panel)
    raise TypeError(f"a panel must be a Panel or a tuple (title, pred_xy, clicked[, show_truth]), got {panel!r}")


def _as_xy(points, what: str) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape != (NUM_KEYPOINTS, 2):
        raise ValueError(f"{what} must have shape ({NUM_KEYPOINTS}, 2) as (x, y) per keypoint, got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError(f"{what} has NaN or infinite coordinates")
    return pts


def _as_image(image) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W) or (H, W, 3), got dtype {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)) or min(img.shape[:2]) < 2:
        raise ValueError(f"image must be uint8 (H, W) or (H, W, 3), got shape {img.shape}")
    return img


# --------------------------------------------------------------------------------------------------------
# drawing primitives
# --------------------------------------------------------------------------------------------------------
def _draw_outlines(ax, pts: np.ndarray, colour: str, width: float) -> None:
    """Each vertebra's quadrilateral: top-left 4v, top-right 4v+1, bottom-right 4v+3, bottom-left 4v+2."""
    for v in range(NUM_KEYPOINTS // 4):
        quad = pts[[4 * v, 4 * v + 1, 4 * v + 3, 4 * v + 2, 4 * v]]
        ax.plot(quad[:, 0], quad[:, 1], "-", color=colour, linewidth=width, alpha=0.9, solid_joinstyle="round")


def _draw_points(ax, pts: np.ndarray, colour: str, size: float) -> None:
    ax.plot(pts[:, 0], pts[:, 1], "o", color=colour, markersize=size, markeredgewidth=0, alpha=0.95)


def _draw_cobb_lines(ax, pts: np.ndarray, vertebrae, spacing_px: float = 2.5) -> None:
    """For each angle, the direction line (left-side midpoint -> right-side midpoint, extended) of its pair.

    A vertebra that bounds several angles gets one line per angle, shifted apart by ``spacing_px`` across
    the line so every colour stays visible, and one label listing the angles ("1,2") at its right end.
    """
    users: dict[int, list[int]] = {}
    for n, pair in enumerate(vertebrae):
        for v in sorted(set(int(u) for u in pair)):
            users.setdefault(v, []).append(n)
    for v, angles in users.items():
        left = (pts[4 * v] + pts[4 * v + 2]) / 2.0
        right = (pts[4 * v + 1] + pts[4 * v + 3]) / 2.0
        d = right - left
        length = float(np.hypot(*d))
        if length == 0:
            continue  # a vertebra without direction has no line
        normal = np.array([-d[1], d[0]]) / length
        start, end = left - 0.7 * d, right + 0.7 * d
        for k, n in enumerate(angles):
            colour, style = COBB_STYLES[n]
            shift = normal * spacing_px * (k - (len(angles) - 1) / 2.0)
            ax.plot([start[0] + shift[0], end[0] + shift[0]], [start[1] + shift[1], end[1] + shift[1]],
                    linestyle=style, color=colour, linewidth=1.6)
        tip = end + 3.0 * d / length
        ax.text(tip[0], tip[1], ",".join(str(n + 1) for n in angles),
                color=COBB_STYLES[angles[0]][0], fontsize=7, fontweight="bold", ha="left", va="center",
                clip_on=True)


def _cobb(points_xy: np.ndarray, display_hw, raw_size_rc) -> dict:
    """Cobb angles of displayed points, measured in original pixels when ``raw_size_rc`` is known."""
    h, w = display_hw
    if raw_size_rc is None:
        return cobb_angles(points_xy, h, degenerate="zero")
    rows, cols = (float(v) for v in np.asarray(raw_size_rc).reshape(2))
    scale = np.array([cols / w, rows / h])
    return cobb_angles(points_xy * scale, rows, degenerate="zero")


def _angles_text(angles) -> str:
    return " / ".join(f"{a:.1f}" for a in angles) + "\N{DEGREE SIGN}"


# --------------------------------------------------------------------------------------------------------
# public
# --------------------------------------------------------------------------------------------------------
def render_strip(image, true_xy, panels: Iterable, *, ncols: int | None = None, raw_size_rc=None,
                 true_angles=None, title: str | None = None, panel_width_px: int = 256,
                 dpi: int = 100) -> np.ndarray:
    """Render panels of one image side by side (``ncols`` per row) and return the picture, (H, W, 3) uint8 RGB.

    ``image``: uint8 (H, W) grayscale or (H, W, 3) RGB, any resolution (e.g. the preprocessed 512x256
    array); ``true_xy`` and each panel's ``pred_xy`` are (68, 2) (x, y) in THIS image's pixels.
    ``panels``: :class:`Panel` or tuples ``(title, pred_xy, clicked_indices[, show_truth])``.
    ``raw_size_rc``: original (rows, cols), so the Cobb angles in the titles are measured in original pixels
    (without it they are measured on the displayed image). ``true_angles``: (3,) truth in degrees (e.g.
    angles.csv) shown in the truth panel and used for each panel's SMAPE; default: computed from ``true_xy``.
    Predictions with a vertebra without direction are drawn and scored with ``degenerate="zero"``.
    Each panel is ``panel_width_px`` pixels wide.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    img = _as_image(image)
    true_pts = _as_xy(true_xy, "true_xy")
    panels = [_as_panel(p) for p in panels]
    if not panels:
        raise ValueError("render_strip needs at least one panel")
    ncols = len(panels) if ncols is None else int(ncols)
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    nrows = -(-len(panels) // ncols)
    h, w = img.shape[:2]
    true_cobb = _cobb(true_pts, (h, w), raw_size_rc)
    truth = (np.asarray(true_cobb["angles"], dtype=np.float64) if true_angles is None
             else np.asarray(true_angles, dtype=np.float64).reshape(3))

    # layout in inches: panels at panel_width_px, a two-line title above each, a legend strip at the bottom
    panel_w = panel_width_px / dpi
    panel_h = panel_w * h / w
    title_h, top_h, gap_w = 0.42, (0.32 if title else 0.05), 0.06
    fig_w = ncols * panel_w + (ncols - 1) * gap_w + 0.1
    legend_cols = int(max(1, min(len(LEGEND_LABELS), fig_w // LEGEND_ENTRY_IN)))
    legend_h = 0.12 + 0.2 * -(-len(LEGEND_LABELS) // legend_cols)
    fig_h = nrows * (panel_h + title_h) + legend_h + top_h
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.05 / fig_w, right=1 - 0.05 / fig_w, bottom=legend_h / fig_h,
                        top=1 - (top_h + title_h) / fig_h, wspace=gap_w / panel_w, hspace=title_h / panel_h)
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False)).reshape(-1)
    for ax in axes[len(panels):]:
        ax.set_axis_off()

    for ax, panel in zip(axes, panels):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255, interpolation="bilinear")
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_axis_off()
        lines = [panel.title]
        if panel.pred_xy is None:
            if panel.show_truth:
                _draw_outlines(ax, true_pts, TRUTH_COLOUR, 0.8)
                _draw_cobb_lines(ax, true_pts, true_cobb["vertebrae"])
                _draw_points(ax, true_pts, TRUTH_COLOUR, 2.2)
                lines.append("Cobb " + _angles_text(truth))
        else:
            pred = _as_xy(panel.pred_xy, f"pred_xy of panel '{panel.title}'")
            result = _cobb(pred, (h, w), raw_size_rc)
            _draw_outlines(ax, pred, PRED_COLOUR, 0.8)
            _draw_cobb_lines(ax, pred, result["vertebrae"])
            if panel.show_truth:
                _draw_points(ax, true_pts, TRUTH_COLOUR, 2.2)
            _draw_points(ax, pred, PRED_COLOUR, 2.2)
            clicked = np.asarray(panel.clicked, dtype=np.int64).reshape(-1)
            if clicked.size:
                if clicked.min() < 0 or clicked.max() >= NUM_KEYPOINTS:
                    raise ValueError(f"panel '{panel.title}': clicked indices must be in 0..{NUM_KEYPOINTS - 1}, "
                                     f"got {clicked.tolist()}")
                ax.plot(pred[clicked, 0], pred[clicked, 1], "*", color=CLICK_COLOUR, markersize=9,
                        markeredgecolor="black", markeredgewidth=0.5)
            smape = float(smape_per_image(result["angles"], truth)[0])
            lines.append(f"Cobb {_angles_text(result['angles'])}  SMAPE {smape:.1f}%")
        ax.set_title("\n".join(lines), fontsize=7.5, pad=3)

    if title:
        fig.suptitle(title, fontsize=8.5, y=1 - 0.04 / fig_h, va="top")
    truth_label, pred_label, click_label, *cobb_labels = LEGEND_LABELS
    handles = [
        Line2D([], [], marker="o", linestyle="", color=TRUTH_COLOUR, label=truth_label),
        Line2D([], [], marker="o", linestyle="-", color=PRED_COLOUR, label=pred_label),
        Line2D([], [], marker="*", linestyle="", color=CLICK_COLOUR, markeredgecolor="black", markersize=9,
               label=click_label),
    ] + [Line2D([], [], linestyle=style, color=colour, linewidth=1.6, label=label)
         for (colour, style), label in zip(COBB_STYLES, cobb_labels)]
    fig.legend(handles=handles, loc="lower center", ncol=legend_cols, fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, 0.0), handlelength=2.0, columnspacing=1.0)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _image_loader(source) -> Callable[[str], np.ndarray]:
    """name -> image: a callable, a folder (np.load(folder / name)) or a dataset with ``image_dir``."""
    if callable(source) and not isinstance(source, (str, os.PathLike)):
        return source
    folder = getattr(source, "image_dir", source)
    if not isinstance(folder, (str, os.PathLike)):
        raise TypeError("images must be a folder of preprocessed arrays, a dataset with an 'image_dir', or a "
                        f"callable name -> image; got {type(source).__name__}")
    folder = Path(folder)

    def load(name: str) -> np.ndarray:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"image array '{path}' not found (is the image folder the preprocessed one?)")
        return np.load(path)

    return load


def _safe_stem(name: str) -> str:
    stem = Path(str(name)).stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("_") or "image"


def strip_panels(arrays: dict, index: int, display_size_rc, clicks: Sequence[int], kind: str = "sargmax") -> list[Panel]:
    """The 2 x (1 + len(clicks)) panels of one image: [truth, model after n clicks...],
    [bare X-ray, manual after n clicks...]; points in the pixels of the displayed image, whose
    (rows, cols) is ``display_size_rc`` (grid coordinates scaled as to the original image)."""
    grid_rc = np.asarray(arrays["image_size_rc"]).reshape(2)
    rows = []
    for revision, first in (("model", Panel("truth")), ("manual", Panel("X-ray", show_truth=False))):
        coords_xy = grid_rc_to_original_xy(arrays[f"{revision}_{kind}_rc"][index], grid_rc, display_size_rc)
        order = np.asarray(arrays[f"{revision}_clicks"][index]).reshape(-1)
        row = [first]
        for n in clicks:
            row.append(Panel(f"{revision} revision, {n} click{'s' if n != 1 else ''}",
                             coords_xy[n], order[:n].tolist()))
        rows += row
    return rows


def write_strips(arrays: dict, images, indices, out_dir, clicks: Sequence[int] = DEFAULT_CLICKS, *,
                 true_angles=None, kind: str = "sargmax") -> list[Path]:
    """Write one PNG per image index into ``out_dir``; return the paths.

    ``arrays``: the output of ``engine.evaluation.evaluate``. ``images``: a folder of preprocessed arrays
    (``np.load(folder / arrays["names"][i])``), a ``KeypointDataset`` (its ``image_dir``), or a callable
    name -> uint8 image. ``indices``: image indices into ``arrays``, or an int N for the first N images.
    ``clicks``: click counts to show (those above the evaluated maximum are left out). ``true_angles``:
    (N, 3) truth from ``engine.cobb_eval.true_cobb_angles`` (default: computed from the true points).
    Each strip: row 1 truth + model revision, row 2 bare X-ray + manual revision; file
    ``<index>_<image stem>.png``.
    """
    from PIL import Image

    from util import atomic_write_bytes

    load = _image_loader(images)
    n_images = len(arrays["names"])
    if isinstance(indices, (int, np.integer)):
        indices = range(min(int(indices), n_images))
    indices = [int(i) for i in indices]
    bad = [i for i in indices if not 0 <= i < n_images]
    if bad:
        raise IndexError(f"image indices {bad} out of range: {n_images} images were evaluated")
    max_clicks = np.asarray(arrays[f"model_{kind}_rc"]).shape[1] - 1
    shown = [int(n) for n in clicks if 0 <= int(n) <= max_clicks]
    if not shown:
        raise ValueError(f"none of the clicks {list(clicks)} was evaluated (0..{max_clicks})")
    grid_rc = np.asarray(arrays["image_size_rc"], dtype=np.float64).reshape(2)
    out_dir = Path(out_dir)
    written = []
    for i in indices:
        name = str(arrays["names"][i])
        image = _as_image(load(name))
        true_xy = grid_rc_to_original_xy(arrays["true_rc"][i], grid_rc, image.shape[:2])
        raw_rc = np.asarray(arrays["raw_size_rc"][i], dtype=np.float64)
        picture = render_strip(
            image, true_xy, strip_panels(arrays, i, image.shape[:2], shown, kind), ncols=1 + len(shown),
            raw_size_rc=raw_rc, true_angles=None if true_angles is None else np.asarray(true_angles)[i],
            title=f"{name}   (original {int(raw_rc[0])}x{int(raw_rc[1])} px; {kind} predictions; "
                  "Cobb angles 1 / 2 / 3 in original pixels)")
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format="PNG", optimize=False)
        path = out_dir / f"{i:04d}_{_safe_stem(name)}.png"
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
    return written
