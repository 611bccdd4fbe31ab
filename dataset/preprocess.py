"""Raw AASCE tree -> the official preprocessed layout (``data_preprocessing.py`` is the command line).

Output, in ``<target>/dataset16_<rows>/`` (same layout as the official script):

- ``data/<split>/<stem>.npy``: the image resized to (rows, cols) with ``cv2.INTER_LINEAR`` (identical to
  albumentations ``Resize``), grayscale repeated to 3 channels, uint8 (rows, cols, 3). Validation images
  come from the training folder, so their path is ``data/training/...``.
- ``train.json``, ``val.json``, ``test.json``: lists of ``{"image": "data/<split>/<stem>.npy",
  "label": raw p2 [[x, y], ...], "raw_size_row_col": [rows, cols], "pixelSpacing": [1, 1],
  "points_<rows>": resized [[x, y], ...]}`` sorted by image path, keys sorted.
- ``preprocessing.json``: the parameters, counts, dropped samples and warnings of the run.

Behaviour (see also the README):

- The validation set is ``val_size`` images drawn without replacement by ``numpy.random.default_rng(seed)``
  from the training images in sorted name order; the test split is the raw ``test`` folder.
- Every fatal problem of the tree (missing folders, unpaired files, unreadable/truncated JPEGs, bad
  labels) is collected first; if there is any, :class:`AasceDataError` lists them all and nothing is
  written (not even the target folder).
- A training/validation sample with a point outside its image is dropped with a warning naming it
  (the official script meant to do this; its removal loop deleted wrong items after the first and never
  removed validation samples). Test samples are never dropped: they are kept with a warning, because
  silently removing test labels would flatter the results.
- The output is built in a hidden temporary sibling folder and renamed into place at the end, so an
  interrupted run never leaves a half-written dataset; an existing output is only replaced with
  ``overwrite=True``. Re-running with the same arguments gives byte-identical files.
"""
from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import os
import secrets
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from tqdm.auto import tqdm

from dataset.aasce_io import (
    NUM_KEYPOINTS,
    AasceDataError,
    RawPair,
    find_pairs,
    points_outside,
    read_image,
    read_label,
)
from config_schema import MAX_IMAGE_SIDE_PX
from util import check_output_dir

logger = logging.getLogger(__name__)

DEFAULT_SOURCE = "./data/dataset16/boostnet_labeldata/"
DEFAULT_TARGET = "./data/"
DEFAULT_SIZE_ROW_COL = (512, 256)
MAX_SIDE_PX = MAX_IMAGE_SIDE_PX  # largest side of a stored image
MAX_SEED = 2**32 - 1  # numpy.random.default_rng takes seeds >= 0; the draw is recorded in preprocessing.json
DEFAULT_VAL_SIZE = 128
DATASET_NAME = "dataset16"
PIXEL_SPACING = [1, 1]  # AASCE has no physical spacing: "mm" means original pixels
TABLE_SPLITS = ("train", "val", "test")


class OutputExistsError(FileExistsError):
    """The output folder exists and ``overwrite`` was not given."""


# --------------------------------------------------------------------------------------------------------
# pure pieces
# --------------------------------------------------------------------------------------------------------
def output_folder_name(size_row_col: Sequence[int]) -> str:
    """'dataset16_<rows>', the official output folder name."""
    return f"{DATASET_NAME}_{int(size_row_col[0])}"


def points_key(size_row_col: Sequence[int]) -> str:
    """'points_<rows>', the official table field holding the resized points."""
    return f"points_{int(size_row_col[0])}"


def _check_size(size_row_col: Sequence[int], what: str) -> tuple[int, int]:
    if len(size_row_col) != 2:
        raise ValueError(f"{what} must be (rows, cols), got {size_row_col!r}")
    rows, cols = size_row_col
    if int(rows) != rows or int(cols) != cols or rows <= 0 or cols <= 0:
        raise ValueError(f"{what} must be two positive integers (rows, cols), got {size_row_col!r}")
    return int(rows), int(cols)


def resize_points_xy(points_xy, raw_size_row_col: Sequence[int], out_size_row_col: Sequence[int]) -> np.ndarray:
    """Scale (x, y) points from a raw image to a resized one: x * cols_out / cols, y * rows_out / rows.

    This is albumentations ``Resize``'s keypoint arithmetic (scale factor first, then product), in float64.
    Returns a new float64 (K, 2) array.
    """
    raw_rows, raw_cols = _check_size(raw_size_row_col, "raw_size_row_col")
    out_rows, out_cols = _check_size(out_size_row_col, "out_size_row_col")
    pts = np.array(points_xy, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points_xy must have shape (K, 2), got {pts.shape}")
    return pts * np.array([out_cols / raw_cols, out_rows / raw_rows])


def resize_image(gray: np.ndarray, out_size_row_col: Sequence[int]) -> np.ndarray:
    """Resize a 2-D uint8 image to (rows, cols) with bilinear interpolation (cv2.INTER_LINEAR)."""
    rows, cols = _check_size(out_size_row_col, "out_size_row_col")
    return cv2.resize(gray, (cols, rows), interpolation=cv2.INTER_LINEAR)


def split_training(num_images: int, val_size: int, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, val), both sorted, of a seeded random split of ``num_images`` sorted images."""
    if not 0 <= val_size <= num_images:
        raise ValueError(f"val_size must be between 0 and the {num_images} training images, got {val_size}")
    rng = np.random.default_rng(seed)
    val = sorted(int(i) for i in rng.choice(num_images, size=val_size, replace=False))
    chosen = set(val)
    return [i for i in range(num_images) if i not in chosen], val


def available_cpus() -> int:
    """CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# --------------------------------------------------------------------------------------------------------
# per-image work (runs in the worker processes)
# --------------------------------------------------------------------------------------------------------
@dataclass
class LoadedSample:
    """One raw image pair read, checked and resized; ``problems`` non-empty means it is unusable."""

    pair: RawPair
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    label: np.ndarray | None = None  # raw p2 in its stored dtype
    raw_size_row_col: tuple[int, int] | None = None
    points_resized_xy: np.ndarray | None = None
    image_resized: np.ndarray | None = None  # uint8 (rows, cols), one channel
    outside: list[int] = field(default_factory=list)  # keypoints outside the raw image


def load_sample(pair: RawPair, out_size_row_col: Sequence[int], num_keypoints: int = NUM_KEYPOINTS) -> LoadedSample:
    """Read, validate and resize one pair. Data problems are returned in ``problems``, never raised."""
    sample = LoadedSample(pair)
    try:
        sample.label = read_label(pair.label_path, num_keypoints)
    except AasceDataError as exc:
        sample.problems += exc.problems
    try:
        gray = read_image(pair.image_path, sample.notes)
    except AasceDataError as exc:
        sample.problems += exc.problems
        return sample
    sample.raw_size_row_col = (int(gray.shape[0]), int(gray.shape[1]))
    sample.image_resized = resize_image(gray, out_size_row_col)
    if sample.label is not None:
        sample.outside = np.flatnonzero(points_outside(sample.label, sample.raw_size_row_col)).tolist()
        sample.points_resized_xy = resize_points_xy(sample.label, sample.raw_size_row_col, out_size_row_col)
    return sample


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would only compete


BACKENDS = ("thread", "process")


def load_samples(
    pairs: Sequence[RawPair],
    out_size_row_col: Sequence[int],
    num_keypoints: int = NUM_KEYPOINTS,
    workers: int = 1,
    progress: bool = False,
    backend: str = "thread",
) -> list[LoadedSample]:
    """:func:`load_sample` for every pair, in order; ``workers`` > 1 spreads them over threads or processes.

    Threads are the default: JPEG decoding (Pillow) and resizing (OpenCV) release the GIL, so threads use
    several cores without the start-up and transfer costs of processes (measured: see the README).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    work = functools.partial(load_sample, out_size_row_col=tuple(out_size_row_col), num_keypoints=num_keypoints)
    bar = functools.partial(tqdm, total=len(pairs), desc="read+resize", unit="img", disable=not progress)
    workers = max(1, min(int(workers), len(pairs)))
    if workers == 1:
        return [work(p) for p in bar(pairs)]
    if backend == "thread":
        with ThreadPoolExecutor(workers) as pool:
            return list(bar(pool.map(work, pairs)))
    chunksize = max(1, len(pairs) // (workers * 8))
    # "spawn" everywhere: the same behaviour on Linux, macOS and Windows, and never a fork of a parent whose
    # OpenCV thread pool is running (that can deadlock the child). A crashing worker raises BrokenProcessPool.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
        return list(bar(pool.map(work, pairs, chunksize=chunksize)))


# --------------------------------------------------------------------------------------------------------
# the whole run
# --------------------------------------------------------------------------------------------------------
@dataclass
class PreprocessReport:
    output_dir: Path
    counts: dict[str, int]  # entries per table: train / val / test
    dropped: list[str]  # one message per dropped sample
    warnings: list[str]  # everything else worth reading (kept test samples, pairing notes, ...)
    seconds: float = 0.0


def _entry(sample: LoadedSample, size_row_col: Sequence[int]) -> dict:
    return {
        "image": sample.pair.rel_npy,
        "label": sample.label.tolist(),
        "raw_size_row_col": list(sample.raw_size_row_col),
        "pixelSpacing": list(PIXEL_SPACING),
        points_key(size_row_col): sample.points_resized_xy.tolist(),
    }


def _outside_message(sample: LoadedSample) -> str:
    rows, cols = sample.raw_size_row_col
    pts = np.asarray(sample.label, dtype=np.float64)
    shown = ", ".join(f"{k}: ({pts[k, 0]:g}, {pts[k, 1]:g})" for k in sample.outside[:4])
    more = f" and {len(sample.outside) - 4} more" if len(sample.outside) > 4 else ""
    return (f"{len(sample.outside)} point(s) outside the image of {cols}x{rows} (cols x rows) "
            f"[keypoint: (x, y)] {shown}{more}")


def _write_json(path: Path, value) -> None:
    text = json.dumps(value, sort_keys=True, allow_nan=False)
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text + "\n")


def _install(tmp: Path, final: Path, overwrite: bool) -> None:
    """Rename the finished temporary folder to ``final``, replacing an old one only with ``overwrite``."""
    if not final.exists():
        os.rename(tmp, final)
        return
    if not overwrite:
        raise OutputExistsError(f"{final}: output folder already exists; pass --overwrite to replace it")
    old = final.with_name(f".{final.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
    os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        os.rename(old, final)  # put the previous dataset back
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old)
    else:
        old.unlink()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(target: Path, name: str) -> list[Path]:
    """Remove the hidden ``.<name>.tmp-<pid>-*`` / ``.<name>.old-<pid>-*`` folders that a killed run left
    in ``target`` (their process is gone); return them. Folders of a live process are left alone."""
    removed = []
    for kind in ("tmp", "old"):
        for path in sorted(target.glob(f".{name}.{kind}-*")):
            pid_text = path.name[len(f".{name}.{kind}-"):].split("-", 1)[0]
            if not pid_text.isdigit() or (int(pid_text) != os.getpid() and _process_alive(int(pid_text))):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed


def preprocess(
    source: str | os.PathLike = DEFAULT_SOURCE,
    target: str | os.PathLike = DEFAULT_TARGET,
    size_row_col: Sequence[int] = DEFAULT_SIZE_ROW_COL,
    val_size: int = DEFAULT_VAL_SIZE,
    seed: int = 0,
    workers: int | None = None,
    overwrite: bool = False,
    num_keypoints: int = NUM_KEYPOINTS,
    progress: bool = False,
    backend: str = "thread",
) -> PreprocessReport:
    """Build ``<target>/dataset16_<rows>/`` from the raw tree at ``source`` (see the module docstring).

    Raises AasceDataError listing every problem of the tree (nothing written), OutputExistsError when the
    output exists without ``overwrite``, ValueError for bad arguments. ``workers=None`` uses all cores;
    ``backend`` ("thread" or "process") says how (see :func:`load_samples`); the output depends on neither.
    """
    started = time.perf_counter()
    size_row_col = _check_size(size_row_col, "size_row_col")
    if max(size_row_col) > MAX_SIDE_PX:
        raise ValueError(f"size_row_col must be at most {MAX_SIDE_PX} px a side, got {size_row_col!r}")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be in [0, {MAX_SEED}], got {seed}")
    if val_size < 0:
        raise ValueError(f"val_size must be >= 0, got {val_size}")
    workers = available_cpus() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    source, target = Path(source), Path(target)
    final = target / output_folder_name(size_row_col)
    if final.exists() and not overwrite:
        raise OutputExistsError(f"{final}: output folder already exists; pass --overwrite to replace it")
    check_output_dir(target)  # not writable or full: say so before reading hundreds of X-rays
    for path in remove_stale_temporaries(target, final.name):
        logger.warning(f"removed {path}, a temporary folder left by an interrupted run")

    # 1. read and check everything; collect every fatal problem before writing anything
    pairs, problems, notes = find_pairs(source)
    training = [p for p in pairs if p.split == "training"]
    if (source / "data" / "training").is_dir() and len(training) < val_size:
        problems.append(f"{source / 'data' / 'training'}: {len(training)} paired training images, fewer than "
                        f"the {val_size} requested for validation (--val-size)")
    samples = load_samples(pairs, size_row_col, num_keypoints, workers, progress, backend) if pairs else []
    for sample in samples:
        problems += sample.problems
        notes += sample.notes
    if problems:
        raise AasceDataError(problems)
    for note in notes:
        logger.warning(note)

    # 2. split, then drop training/validation samples with points outside their image
    by_split = {"training": [s for s in samples if s.pair.split == "training"],
                "test": [s for s in samples if s.pair.split == "test"]}
    train_idx, val_idx = split_training(len(by_split["training"]), val_size, seed)
    tables: dict[str, list[LoadedSample]] = {
        "train": [by_split["training"][i] for i in train_idx],
        "val": [by_split["training"][i] for i in val_idx],
        "test": by_split["test"],
    }
    dropped: list[str] = []
    warnings: list[str] = list(notes)
    for split in ("train", "val"):
        kept = []
        for sample in tables[split]:
            if sample.outside:
                message = f"{sample.pair.image_path}: dropped from '{split}': {_outside_message(sample)}"
                logger.warning(message)
                dropped.append(message)
            else:
                kept.append(sample)
        tables[split] = kept
    for sample in tables["test"]:
        if sample.outside:
            message = (f"{sample.pair.image_path}: kept in 'test' (test labels are never removed) although it has "
                       f"{_outside_message(sample)}")
            logger.warning(message)
            warnings.append(message)

    # 3. write into a temporary sibling folder, then rename it into place
    counts = {split: len(tables[split]) for split in TABLE_SPLITS}
    manifest = {
        "source": str(source.resolve()),
        "size_row_col": list(size_row_col),
        "val_size": val_size,
        "seed": seed,
        "num_keypoints": num_keypoints,
        "resize": "cv2.resize INTER_LINEAR; points x * cols_out / cols, y * rows_out / rows",
        "counts": counts,
        "dropped": dropped,
        "warnings": warnings,
    }
    everything = [s for split in TABLE_SPLITS for s in tables[split]]
    array_bytes = sum(s.image_resized.size * 3 + 128 for s in everything)  # .npy: (rows, cols, 3) uint8 + header
    check_output_dir(target, min_free_bytes=array_bytes + 16 * 2**20)
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        for folder in sorted({os.path.dirname(s.pair.rel_npy) for s in everything}):
            (tmp / folder).mkdir(parents=True, exist_ok=True)
        for sample in tqdm(everything, desc="write", unit="img", disable=not progress):
            rgb = np.repeat(sample.image_resized[:, :, None], 3, axis=-1)  # (rows, cols) -> (rows, cols, 3)
            np.save(tmp / sample.pair.rel_npy, rgb, allow_pickle=False)
        for split in TABLE_SPLITS:
            table = sorted((_entry(s, size_row_col) for s in tables[split]), key=lambda e: e["image"])
            _write_json(tmp / f"{split}.json", table)
        _write_json(tmp / "preprocessing.json", manifest)
        _install(tmp, final, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return PreprocessReport(final, counts, dropped, warnings, time.perf_counter() - started)
