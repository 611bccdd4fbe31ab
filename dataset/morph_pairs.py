"""Keypoint pairs and triplets of the morphology-aware loss: selection from training labels, and loading.

The loss (misc/morphology.py) compares predicted and true distances of keypoint PAIRS (i, j) and angles of
TRIPLETS (x, y, z) at the vertex y. The paper's authors released a fixed list for AASCE (70 pairs,
70 triplets; shipped here as ``morph_pairs_dataset16.json``) but no selection code. Our selection ranks
every candidate by how stable its quantity is over the training labels and keeps the most stable ones:

- pairs: all K (K - 1) / 2 pairs i < j, ranked by the variance of their length;
- triplets: all (x, y, z) with x < z and y different from both, ranked by the variance of the signed angle
  at y from y->x to y->z, taken around its circular mean (so an angle near +-180 degrees is not penalised
  by the wrap-around; the loss compares (cos, sin) and is wrap-free too).

Both are measured in a FRAME: ``"grid"`` (default) = the points on the resized training grid (e.g. 512 rows
x 256 cols, the ``points_512`` of the preprocessed tables), ``"normalised"`` = x / width, y / height.
On the 417 AASCE training labels of the shared copy, "grid" recovers 66 of the 70 official pairs and 63 of
the 70 official triplets, "normalised" 60 and 62 (see the README). Lower variance first; ties keep the
candidate order (pairs lexicographic, triplets by vertex, then outer points), so the result is deterministic.

Pure functions operate on numpy arrays; reading label folders/tables and writing JSON are at the end.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from util import atomic_write_text

__all__ = [
    "FRAMES",
    "OFFICIAL_LISTS",
    "candidate_pairs",
    "candidate_triplets",
    "count_recovered",
    "load_morph_pairs",
    "pair_length_variance",
    "read_label_folder",
    "read_table",
    "select_morph_pairs",
    "to_frame",
    "triplet_angle_variance",
    "validate_morph_pairs",
    "write_morph_pairs",
]

FRAMES = ("grid", "normalised")
OFFICIAL_LISTS = {"dataset16": Path(__file__).resolve().parent / "morph_pairs_dataset16.json"}


# --------------------------------------------------------------------------------------------------------
# candidates and their statistics
# --------------------------------------------------------------------------------------------------------
def candidate_pairs(num_keypoints: int) -> np.ndarray:
    """All pairs (i, j), i < j, of ``num_keypoints`` points in lexicographic order: (K (K - 1) / 2, 2)."""
    i, j = np.triu_indices(int(num_keypoints), 1)
    return np.stack([i, j], axis=1).astype(np.int64)


def candidate_triplets(num_keypoints: int) -> np.ndarray:
    """All triplets (x, y, z), x < z, y not in {x, z}, ordered by y then (x, z): (K (K-1) (K-2) / 2, 3)."""
    pairs = candidate_pairs(num_keypoints)
    blocks = []
    for y in range(int(num_keypoints)):
        xz = pairs[(pairs[:, 0] != y) & (pairs[:, 1] != y)]
        blocks.append(np.column_stack([xz[:, 0], np.full(len(xz), y), xz[:, 1]]))
    return np.concatenate(blocks) if blocks else np.zeros((0, 3), np.int64)


def _check_coords(coords: np.ndarray) -> np.ndarray:
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 3 or coords.shape[2] != 2 or coords.shape[0] < 2 or coords.shape[1] < 3:
        raise ValueError(
            f"coordinates must have shape (N, K, 2) with N >= 2 label sets and K >= 3 keypoints, got {coords.shape}"
        )
    bad = ~np.isfinite(coords).all(axis=(1, 2))
    if bad.any():
        raise ValueError(f"label sets {np.flatnonzero(bad)[:10].tolist()} have NaN or infinite coordinates")
    return coords


def pair_length_variance(coords: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Variance over the N label sets of the length of each pair: coords (N, K, 2), pairs (P, 2) -> (P,)."""
    coords = _check_coords(coords)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    lengths = np.linalg.norm(coords[:, pairs[:, 1]] - coords[:, pairs[:, 0]], axis=-1)
    return lengths.var(axis=0)


def triplet_angle_variance(
    coords: np.ndarray,
    triplets: np.ndarray,
    *,
    chunk: int = 4096,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> np.ndarray:
    """Variance over the N label sets of the angle at y of each triplet (x, y, z), in radians^2: (T,).

    The angle is the signed angle from y->x to y->z (0 when a direction has zero length); its variance is
    taken around the circular mean (the direction of the mean of the unit vectors (cos, sin)), so it does
    not jump at +-pi. ``chunk`` triplets are processed at a time (memory ~ N x chunk); ``progress`` wraps
    the chunk iterator (e.g. ``tqdm``).
    """
    coords = _check_coords(coords)
    triplets = np.asarray(triplets, dtype=np.int64).reshape(-1, 3)
    out = np.empty(len(triplets), dtype=np.float64)
    step = max(int(chunk), 1)
    starts = range(0, len(triplets), step)
    for start in progress(starts) if progress is not None else starts:
        t = triplets[start : start + step]
        vertex = coords[:, t[:, 1]]
        u = coords[:, t[:, 0]] - vertex
        w = coords[:, t[:, 2]] - vertex
        cross = u[..., 0] * w[..., 1] - u[..., 1] * w[..., 0]
        dot = (u * w).sum(-1)
        radius = np.hypot(cross, dot)  # |u| |w|
        zero = radius == 0
        radius[zero] = 1.0
        cos = np.where(zero, 1.0, dot / radius)
        sin = cross / radius  # 0 where zero
        mean_cos, mean_sin = cos.mean(axis=0), sin.mean(axis=0)
        length = np.hypot(mean_cos, mean_sin)
        spread = length == 0  # no mean direction: measure the deviations from angle 0
        length[spread] = 1.0
        mean_cos = np.where(spread, 1.0, mean_cos / length)
        mean_sin = np.where(spread, 0.0, mean_sin / length)
        # each angle minus the mean angle, in (-pi, pi]: rotate (cos, sin) by minus the mean direction
        deviation = np.arctan2(sin * mean_cos - cos * mean_sin, cos * mean_cos + sin * mean_sin)
        out[start : start + len(t)] = np.square(deviation).mean(axis=0)
    return out


# --------------------------------------------------------------------------------------------------------
# selection
# --------------------------------------------------------------------------------------------------------
def to_frame(points_xy, sizes_rc, *, frame: str = "grid", grid_size_rc=(512, 256)) -> np.ndarray:
    """Points (N, K, 2) as (x, y) on images of sizes (N, 2) (rows, cols) -> (x, y) in ``frame``.

    ``"normalised"``: x / cols, y / rows. ``"grid"``: the normalised points times the grid size, i.e. the
    points on the resized image of ``grid_size_rc`` (rows, cols).
    """
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}")
    points = np.asarray(points_xy, dtype=np.float64)
    sizes = np.asarray(sizes_rc, dtype=np.float64)
    if points.ndim != 3 or points.shape[2] != 2:
        raise ValueError(f"points_xy must have shape (N, K, 2), got {points.shape}")
    if sizes.shape != (points.shape[0], 2):
        raise ValueError(f"sizes_rc must have shape (N, 2) = (rows, cols) per label set, got {sizes.shape}")
    if not (np.isfinite(sizes).all() and (sizes > 0).all()):
        raise ValueError("sizes_rc must hold positive image sizes (rows, cols)")
    normalised = points / sizes[:, None, ::-1]  # x / cols, y / rows
    if frame == "normalised":
        return normalised
    grid = np.asarray(grid_size_rc, dtype=np.float64)
    if grid.shape != (2,) or not (grid > 0).all():
        raise ValueError(f"grid_size_rc must be (rows, cols) > 0, got {grid_size_rc!r}")
    return normalised * grid[::-1]


def _lowest(scores: np.ndarray, candidates: np.ndarray, count: int, what: str) -> np.ndarray:
    count = int(count)
    if not 0 <= count <= len(candidates):
        raise ValueError(f"cannot select {count} {what}: there are {len(candidates)} candidates")
    order = np.argsort(scores, kind="stable")  # ties keep the lexicographic candidate order
    return candidates[order[:count]]


def select_morph_pairs(
    points_xy,
    sizes_rc,
    *,
    num_pairs: int = 70,
    num_triplets: int = 70,
    frame: str = "grid",
    grid_size_rc=(512, 256),
    progress: Callable[[Iterable], Iterable] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``num_pairs`` pairs and ``num_triplets`` triplets whose length / angle varies least over the labels.

    ``points_xy`` (N, K, 2): (x, y) of K keypoints in N training label sets, on images of ``sizes_rc`` (N, 2)
    (rows, cols); the statistics are measured in ``frame`` (see :func:`to_frame`). Returns int64 arrays
    (num_pairs, 2) and (num_triplets, 3), most stable first, in the [pairs, triplets] format of
    :func:`load_morph_pairs`.
    """
    coords = _check_coords(to_frame(points_xy, sizes_rc, frame=frame, grid_size_rc=grid_size_rc))
    num_keypoints = coords.shape[1]
    pairs = candidate_pairs(num_keypoints)
    chosen_pairs = _lowest(pair_length_variance(coords, pairs), pairs, num_pairs, "pairs")
    triplets = candidate_triplets(num_keypoints)
    if num_triplets:
        scores = triplet_angle_variance(coords, triplets, progress=progress)
    else:
        scores = np.zeros(len(triplets))
    chosen_triplets = _lowest(scores, triplets, num_triplets, "triplets")
    return chosen_pairs, chosen_triplets


def count_recovered(selected, reference) -> int:
    """How many entries of ``reference`` are in ``selected``.

    Pairs match regardless of order ((i, j) == (j, i)); triplets regardless of the order of their two
    outer points ((x, y, z) == (z, y, x): the same angle up to its sign).
    """

    def canonical(entry) -> tuple:
        entry = tuple(int(v) for v in entry)
        if len(entry) == 2:
            return tuple(sorted(entry))
        if len(entry) == 3:
            x, y, z = entry
            return (min(x, z), y, max(x, z))
        raise ValueError(f"entries must be pairs or triplets, got {entry}")

    chosen = {canonical(e) for e in selected}
    return sum(canonical(e) in chosen for e in reference)


# --------------------------------------------------------------------------------------------------------
# the [pairs, triplets] JSON format
# --------------------------------------------------------------------------------------------------------
def _index_array(entries, arity: int, what: str, num_keypoints: int) -> np.ndarray:
    if not isinstance(entries, (list, tuple, np.ndarray)) or len(entries) == 0:
        raise ValueError(f"{what} must be a non-empty list of {arity}-index entries")
    rows = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, (list, tuple, np.ndarray)) or len(entry) != arity:
            raise ValueError(f"{what}[{n}] = {entry!r}: every entry must have exactly {arity} keypoint indices")
        row = []
        for value in entry:
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{what}[{n}] = {list(entry)!r}: indices must be integers")
            if not 0 <= int(value) < num_keypoints:
                raise ValueError(
                    f"{what}[{n}] = {list(entry)!r}: index {int(value)} is out of range for {num_keypoints} keypoints"
                )
            row.append(int(value))
        if len(set(row)) != arity:
            raise ValueError(f"{what}[{n}] = {row}: the {arity} indices must be different keypoints")
        rows.append(row)
    return np.asarray(rows, dtype=np.int64)


def validate_morph_pairs(pairs, triplets, num_keypoints: int = 68) -> tuple[np.ndarray, np.ndarray]:
    """Check pairs (P, 2) and triplets (T, 3) of distinct indices in [0, num_keypoints); return int64 arrays."""
    if isinstance(num_keypoints, bool) or not isinstance(num_keypoints, (int, np.integer)) or num_keypoints < 3:
        raise ValueError(f"num_keypoints must be an integer >= 3, got {num_keypoints!r}")
    as_list = lambda a: a.tolist() if isinstance(a, np.ndarray) else a  # noqa: E731 - numpy ints -> int
    return (
        _index_array(as_list(pairs), 2, "pairs", int(num_keypoints)),
        _index_array(as_list(triplets), 3, "triplets", int(num_keypoints)),
    )


def load_morph_pairs(name_or_path, num_keypoints: int = 68) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (P, 2) and triplets (T, 3) as int64 arrays from a known name or a JSON file [pairs, triplets].

    Known names: ``"dataset16"`` = the official AASCE list (70 pairs, 70 triplets). Raises ValueError for a
    malformed list (wrong arity, index out of range for ``num_keypoints``) and FileNotFoundError for an
    unknown name that is not an existing file.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a name or a path, got {type(name_or_path).__name__}")
    key = os.fspath(name_or_path)
    path = OFFICIAL_LISTS[key] if key in OFFICIAL_LISTS else Path(key)
    if not path.is_file():
        raise FileNotFoundError(
            f"morphology pairs {key!r}: not a known name ({', '.join(sorted(OFFICIAL_LISTS))}) nor a JSON file"
        )
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(content, list) or len(content) != 2:
        raise ValueError(f"{path}: expected a JSON list [pairs, triplets], got {type(content).__name__}"
                         f"{' of length ' + str(len(content)) if isinstance(content, list) else ''}")
    try:
        return validate_morph_pairs(content[0], content[1], num_keypoints)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def write_morph_pairs(path, pairs, triplets, num_keypoints: int = 68) -> Path:
    """Validate and write [pairs, triplets] as JSON atomically (temporary file + rename); return the path."""
    pairs, triplets = validate_morph_pairs(pairs, triplets, num_keypoints)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps([pairs.tolist(), triplets.tolist()]) + "\n"
    atomic_write_text(path, text)
    return path


# --------------------------------------------------------------------------------------------------------
# reading training labels
# --------------------------------------------------------------------------------------------------------
def _image_size_rc(image_path: Path) -> tuple[int, int] | None:
    """(rows, cols) from the image header (PIL reads the size without decoding), or None if unavailable."""
    if not image_path.is_file():
        return None
    try:
        from PIL import Image
    except ImportError:
        return None
    with Image.open(image_path) as image:
        cols, rows = image.size
    return rows, cols


def read_label_folder(folder) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Raw AASCE labels of one split: ``labels/<split>/`` with ``<image>.jpg.mat`` files (variable ``p2``).

    Returns points (N, 68, 2) (x, y) in original pixels as float64, image sizes (N, 2) (rows, cols) and the
    image names. Order: ``filenames.csv`` when present, else the sorted .mat files. Image sizes come from
    the image headers in ``data/<split>/`` beside ``labels/`` when they are there, else from
    ``landmarks.csv`` (x / width and y / height next to the pixel points give width and height).
    """
    import scipy.io

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"label folder {folder} does not exist")
    names_csv = folder / "filenames.csv"
    if names_csv.is_file():
        names = [line.strip() for line in names_csv.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        names = sorted(p.name[: -len(".mat")] for p in folder.glob("*.mat"))
    if not names:
        raise ValueError(f"{folder}: no labels (no filenames.csv and no .mat files)")

    points = []
    for name in names:
        mat_path = folder / f"{name}.mat"
        if not mat_path.is_file():
            raise FileNotFoundError(f"{mat_path} listed in filenames.csv does not exist")
        p2 = scipy.io.loadmat(str(mat_path)).get("p2")
        if p2 is None or np.ndim(p2) != 2 or np.shape(p2)[1] != 2:
            raise ValueError(f"{mat_path}: expected a variable 'p2' of shape (K, 2)")
        points.append(np.asarray(p2, dtype=np.float64))  # stored as uint16: float before subtracting
    if len({p.shape for p in points}) != 1:
        raise ValueError(f"{folder}: the label files hold different numbers of keypoints")
    points = np.stack(points)

    image_dir = folder.parent.parent / "data" / folder.name
    sizes = [_image_size_rc(image_dir / name) for name in names]
    if any(size is None for size in sizes):
        sizes = _sizes_from_landmarks(folder / "landmarks.csv", points, names)
    return points, np.asarray(sizes, dtype=np.float64), names


def _sizes_from_landmarks(path: Path, points: np.ndarray, names: list[str]) -> list[tuple[int, int]]:
    if not path.is_file():
        raise FileNotFoundError(
            f"image sizes unknown: neither the images nor {path} (x / width, y / height per image) are present"
        )
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [[float(v) for v in row] for row in csv.reader(handle) if row]
    num_keypoints = points.shape[1]
    if len(rows) != len(names) or any(len(r) != 2 * num_keypoints for r in rows):
        raise ValueError(f"{path}: expected {len(names)} rows of {2 * num_keypoints} values")
    relative = np.asarray(rows)
    sizes = []
    for n, name in enumerate(names):
        size = []
        for axis, rel in ((1, relative[n, num_keypoints:]), (0, relative[n, :num_keypoints])):  # rows, cols
            usable = rel > 0.05  # points near 0 give imprecise ratios
            if not usable.any():
                raise ValueError(f"{path}: cannot recover the size of image {name!r}")
            size.append(int(round(float(np.median(points[n, usable, axis] / rel[usable])))))
        sizes.append(tuple(size))
    return sizes


def read_table(path, grid_size_rc=(512, 256)) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Points (N, K, 2) (x, y), image sizes (N, 2) (rows, cols) and names from a preprocessed table JSON.

    A table (written by data_preprocessing.py) is a JSON list of samples. When every sample has its raw
    ``label`` and ``raw_size_row_col``, those are returned (original pixels); otherwise its resized points
    ``points_<rows>`` are returned with ``grid_size_rc`` as their image size (its rows must match the key).
    """
    path = Path(path)
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(table, list) or not table or not all(isinstance(e, dict) for e in table):
        raise ValueError(f"{path}: a preprocessed table is a non-empty JSON list of samples (objects)")
    names = [str(entry.get("image", n)) for n, entry in enumerate(table)]
    if all("label" in e and "raw_size_row_col" in e for e in table):
        points = [np.asarray(e["label"], dtype=np.float64) for e in table]
        sizes = np.asarray([e["raw_size_row_col"] for e in table], dtype=np.float64)
        what = "label"
    else:
        keys = sorted({k for e in table for k in e if k.startswith("points_")})
        if len(keys) != 1 or not all(keys[0] in e for e in table):
            raise ValueError(f"{path}: every sample needs 'label' + 'raw_size_row_col' or one 'points_<rows>' "
                             f"entry (found {keys or 'none'})")
        what = keys[0]
        if what != f"points_{int(grid_size_rc[0])}":
            raise ValueError(f"{path}: {what!r} does not belong to a grid of {grid_size_rc[0]} rows: "
                             "pass the grid size the table was made with")
        points = [np.asarray(e[what], dtype=np.float64) for e in table]
        sizes = np.tile(np.asarray(grid_size_rc, dtype=np.float64), (len(table), 1))
    if len({p.shape for p in points}) != 1 or points[0].ndim != 2 or points[0].shape[1] != 2:
        raise ValueError(f"{path}: every {what!r} must be a (K, 2) list of (x, y) with the same K")
    if sizes.shape != (len(table), 2):
        raise ValueError(f"{path}: every raw_size_row_col must be [rows, cols]")
    return np.stack(points), sizes, names
