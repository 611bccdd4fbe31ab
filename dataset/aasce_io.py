"""Reading and validating a raw AASCE tree (SpineWeb dataset 16, ``boostnet_labeldata``).

The tree, as distributed for the AASCE 2019 challenge::

    <root>/data/<split>/<name>.jpg          8-bit grayscale JPEG
    <root>/labels/<split>/<name>.jpg.mat    MATLAB file holding ``p2``: (68, 2) pixel (x, y), uint16
    <root>/labels/<split>/filenames.csv     one image name per row (sorted), no header, CRLF
    <root>/labels/<split>/landmarks.csv     68 x / width then 68 y / height per row, '%.5g', CRLF
    <root>/labels/<split>/angles.csv        3 Cobb angles in degrees per row, '%.5g', CRLF

with ``<split>`` in ``training`` and ``test``. Image names contain spaces and parentheses, and two names
may differ only in letter case, so pairing is exact (case-sensitive) first.

Every function here raises :class:`AasceDataError` with messages that name the offending file and say
what is wrong; :func:`find_pairs` instead *collects* all pairing problems so a caller can report them
at once. Nothing here writes files except :func:`write_label_csvs`.
"""
from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import scipy.io
from PIL import Image, ImageFile

NUM_KEYPOINTS = 68  # 4 corners x 17 vertebrae (T1..L5): the AASCE label format
SPLITS = ("training", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg")  # compared case-insensitively
LABEL_SUFFIX = ".mat"  # appended to the full image name: "<name>.jpg" -> "<name>.jpg.mat"
LABEL_VARIABLE = "p2"
CSV_NAMES = ("filenames.csv", "landmarks.csv", "angles.csv")
CSV_FLOAT_FORMAT = "%.5g"  # what MATLAB's csvwrite produced for the real files
CSV_NEWLINE = "\r\n"

# Image modes converted to 8-bit grayscale when read; anything else (16-bit, float) is rejected.
_CONVERTIBLE_MODES = ("1", "P", "RGB", "RGBA", "LA", "CMYK", "YCbCr")


class AasceDataError(ValueError):
    """Problems with a raw AASCE tree; ``problems`` lists one message per problem, each naming a file."""

    def __init__(self, problems: str | Sequence[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class RawPair:
    """One image of the raw tree and its label file."""

    split: str  # "training" or "test" (folder name in the raw tree)
    name: str  # image file name, e.g. "sunhl-1th-02-Jan-2017-162 A AP.jpg"
    image_path: Path
    label_path: Path

    @property
    def rel_image(self) -> str:
        """Image path relative to the tree root, with '/' separators: 'data/<split>/<name>'."""
        return f"data/{self.split}/{self.name}"

    @property
    def rel_npy(self) -> str:
        """Where the preprocessed array goes, relative to the output folder: 'data/<split>/<stem>.npy'."""
        return f"data/{self.split}/{image_stem(self.name)}.npy"


def image_stem(name: str) -> str:
    """The image name without its .jpg/.jpeg suffix (any letter case)."""
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    raise ValueError(f"'{name}' is not a .jpg image name")


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _listdir(folder: Path) -> list[str]:
    """Visible entries of a folder, sorted (hidden files such as .DS_Store are ignored)."""
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


# --------------------------------------------------------------------------------------------------------
# pairing images and labels
# --------------------------------------------------------------------------------------------------------
def find_pairs(
    root: str | os.PathLike, splits: Iterable[str] = SPLITS
) -> tuple[list[RawPair], list[str], list[str]]:
    """Pair every ``data/<split>/<name>.jpg`` with ``labels/<split>/<name>.jpg.mat``.

    Returns ``(pairs, problems, notes)``: pairs sorted by (split order, name); ``problems`` are fatal
    (missing folders, an image without a label, a label without an image, an empty split, two images
    that would be written to the same .npy file); ``notes`` are harmless remarks (ignored stray files,
    a pair matched only case-insensitively). Names are matched exactly first; what is left is matched
    ignoring letter case when that is one-to-one (e.g. 'x A AP.jpg' with 'x a ap.jpg.mat').
    """
    root = Path(root)
    if not root.is_dir():
        return [], [f"{root}: source folder not found (expected a boostnet_labeldata tree with data/ and labels/)"], []
    pairs: list[RawPair] = []
    problems: list[str] = []
    notes: list[str] = []
    for top in ("data", "labels"):
        if not (root / top).is_dir():
            problems.append(f"{root / top}: folder not found (a boostnet_labeldata tree has data/ and labels/)")
    if problems:
        return [], problems, notes
    for split in splits:
        image_dir, label_dir = root / "data" / split, root / "labels" / split
        missing = [d for d in (image_dir, label_dir) if not d.is_dir()]
        for d in missing:
            problems.append(f"{d}: folder not found (needed for the '{split}' split)")
        if missing:
            continue
        images: list[str] = []
        for name in _listdir(image_dir):
            if (image_dir / name).is_dir():
                notes.append(f"{image_dir / name}: sub-folder ignored")
            elif _is_image_name(name):
                images.append(name)
            else:
                notes.append(f"{image_dir / name}: ignored (not a .jpg image)")
        labels: dict[str, str] = {}  # image name the label belongs to -> label file name
        for name in _listdir(label_dir):
            if name.lower().endswith(LABEL_SUFFIX) and not (label_dir / name).is_dir():
                key = name[: -len(LABEL_SUFFIX)]
                if key in labels:
                    problems.append(f"{label_dir / name}: a second label for '{key}' (also '{labels[key]}')")
                else:
                    labels[key] = name
            elif name not in CSV_NAMES:
                notes.append(f"{label_dir / name}: ignored (not a .mat label)")
        if not images:
            problems.append(f"{image_dir}: no .jpg images in the '{split}' split")

        matched: dict[str, str] = {}
        for name in images:
            if name in labels:
                matched[name] = labels[name]
        left_images = [n for n in images if n not in matched]
        used = set(matched.values())
        left_labels = {k: v for k, v in labels.items() if v not in used}
        by_lower_label: dict[str, list[str]] = {}
        for key in left_labels:
            by_lower_label.setdefault(key.lower(), []).append(key)
        lower_images = [n.lower() for n in left_images]
        for name in left_images:
            candidates = by_lower_label.get(name.lower(), [])
            if len(candidates) == 1 and lower_images.count(name.lower()) == 1:
                label_name = left_labels[candidates[0]]
                matched[name] = label_name
                notes.append(
                    f"{image_dir / name}: paired with '{label_dir / label_name}' (names differ only in letter case)"
                )
        used = set(matched.values())
        for name in images:
            if name not in matched:
                problems.append(
                    f"{image_dir / name}: image without a label (expected '{label_dir / (name + LABEL_SUFFIX)}')"
                )
        for key, label_name in sorted(labels.items()):
            if label_name not in used:
                problems.append(
                    f"{label_dir / label_name}: label without an image (expected '{image_dir / key}')"
                )
        seen_npy: dict[str, str] = {}
        for name in images:
            if name not in matched:
                continue
            pair = RawPair(split, name, image_dir / name, label_dir / matched[name])
            if pair.rel_npy in seen_npy:
                problems.append(
                    f"{image_dir / name}: would be written to the same '{pair.rel_npy}' as "
                    f"'{image_dir / seen_npy[pair.rel_npy]}' (rename one of them)"
                )
                continue
            seen_npy[pair.rel_npy] = name
            pairs.append(pair)
    return pairs, problems, notes


# --------------------------------------------------------------------------------------------------------
# reading one label / one image
# --------------------------------------------------------------------------------------------------------
def read_label(path: str | os.PathLike, num_keypoints: int = NUM_KEYPOINTS) -> np.ndarray:
    """The ``p2`` array of one .mat label, (num_keypoints, 2) pixel (x, y), in its stored dtype.

    Raises AasceDataError naming the file when it cannot be read, has no ``p2``, ``p2`` is not a real
    numeric (K, 2) array with K = num_keypoints, or holds NaN / infinite coordinates.
    """
    path = Path(path)
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError, ... for broken files
        raise AasceDataError(f"{path}: cannot read the MATLAB label file ({type(exc).__name__}: {exc})") from None
    if LABEL_VARIABLE not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise AasceDataError(f"{path}: no '{LABEL_VARIABLE}' variable in the label file (found {found or 'none'})")
    p2 = np.asarray(mat[LABEL_VARIABLE])
    if p2.dtype.kind not in "uif":
        raise AasceDataError(f"{path}: '{LABEL_VARIABLE}' must hold real numbers, got dtype {p2.dtype}")
    if p2.shape != (num_keypoints, 2):
        raise AasceDataError(
            f"{path}: '{LABEL_VARIABLE}' has shape {p2.shape}, expected ({num_keypoints}, 2) "
            f"(x, y of {num_keypoints} keypoints)"
        )
    if p2.dtype.kind == "f":
        bad = ~np.isfinite(p2).all(axis=1)
        if bad.any():
            raise AasceDataError(
                f"{path}: '{LABEL_VARIABLE}' has NaN or infinite coordinates at keypoints "
                f"{np.flatnonzero(bad).tolist()}"
            )
    return p2


_truncation_lock = threading.Lock()
_truncation_users = 0
_truncation_saved = False


@contextlib.contextmanager
def _strict_truncation():
    """Make PIL raise on truncated images even if someone set ImageFile.LOAD_TRUNCATED_IMAGES = True.

    Thread-safe: the flag is switched off while any thread is inside and restored when the last one leaves.
    """
    global _truncation_users, _truncation_saved
    with _truncation_lock:
        if _truncation_users == 0:
            _truncation_saved = ImageFile.LOAD_TRUNCATED_IMAGES
        _truncation_users += 1
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        with _truncation_lock:
            _truncation_users -= 1
            if _truncation_users == 0:
                ImageFile.LOAD_TRUNCATED_IMAGES = _truncation_saved


def read_image(path: str | os.PathLike, notes: list[str] | None = None) -> np.ndarray:
    """The fully decoded image as a uint8 (rows, cols) grayscale array.

    Truncated or corrupt files raise AasceDataError naming the file (the whole file is decoded, with
    ``ImageFile.LOAD_TRUNCATED_IMAGES`` forced off). Colour images are converted to grayscale (a remark
    goes to ``notes`` when given); 16-bit / float images are rejected.
    """
    path = Path(path)
    try:
        with Image.open(path) as image, _strict_truncation():
            image.load()
            mode = image.mode
            if mode in _CONVERTIBLE_MODES:
                if notes is not None:
                    notes.append(f"{path}: {mode} image converted to 8-bit grayscale")
                image = image.convert("L")
            elif mode != "L":
                raise AasceDataError(f"{path}: unsupported image mode '{mode}' (expected 8-bit grayscale 'L')")
            pixels = np.array(image, dtype=np.uint8)
    except AasceDataError:
        raise
    except Exception as exc:  # PIL: UnidentifiedImageError, OSError("image file is truncated"), SyntaxError, ...
        raise AasceDataError(f"{path}: unreadable or truncated image ({type(exc).__name__}: {exc})") from None
    if pixels.ndim != 2 or pixels.size == 0:
        raise AasceDataError(f"{path}: decoded to an empty or non-2-D array of shape {pixels.shape}")
    return pixels


def points_outside(points_xy, raw_size_row_col: Sequence[int]) -> np.ndarray:
    """Boolean mask of the points outside the image: x < 0, y < 0, x > cols or y > rows.

    A point exactly on the far border (x == cols or y == rows) counts as inside, as in the official check.
    """
    pts = np.asarray(points_xy, dtype=np.float64)
    rows, cols = raw_size_row_col
    return (pts[:, 0] < 0) | (pts[:, 1] < 0) | (pts[:, 0] > cols) | (pts[:, 1] > rows)


# --------------------------------------------------------------------------------------------------------
# the label CSV files
# --------------------------------------------------------------------------------------------------------
def _format_row(values) -> str:
    return ",".join(CSV_FLOAT_FORMAT % float(v) for v in values)


def landmarks_row(points_xy, raw_size_row_col: Sequence[int]) -> np.ndarray:
    """One landmarks.csv row: the K x values divided by the width, then the K y values divided by the height."""
    pts = np.asarray(points_xy, dtype=np.float64)
    rows, cols = raw_size_row_col
    return np.concatenate([pts[:, 0] / cols, pts[:, 1] / rows])


def write_label_csvs(
    label_dir: str | os.PathLike,
    names: Sequence[str],
    points_xy: Sequence[np.ndarray],
    raw_sizes_row_col: Sequence[Sequence[int]],
    angles_deg: Sequence[Sequence[float]],
) -> None:
    """Write filenames.csv, landmarks.csv and angles.csv in the real files' format.

    No header, comma separated, CRLF line ends, numbers as '%.5g' (MATLAB csvwrite), rows in ``names``
    order (the real files are sorted by name).
    """
    label_dir = Path(label_dir)
    if not (len(names) == len(points_xy) == len(raw_sizes_row_col) == len(angles_deg)):
        raise ValueError("names, points_xy, raw_sizes_row_col and angles_deg must have the same length")
    files = {
        "filenames.csv": [str(n) for n in names],
        "landmarks.csv": [_format_row(landmarks_row(p, s)) for p, s in zip(points_xy, raw_sizes_row_col)],
        "angles.csv": [_format_row(a) for a in angles_deg],
    }
    for file_name, lines in files.items():
        with open(label_dir / file_name, "w", newline="") as handle:
            handle.write("".join(line + CSV_NEWLINE for line in lines))


def read_label_csvs(label_dir: str | os.PathLike) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Read filenames.csv, landmarks.csv (N, 2K) and angles.csv (N, 3) of one ``labels/<split>`` folder."""
    label_dir = Path(label_dir)
    try:
        with open(label_dir / "filenames.csv", newline="") as handle:
            names = [line.rstrip("\r\n") for line in handle if line.strip()]
        landmarks = np.loadtxt(label_dir / "landmarks.csv", delimiter=",", ndmin=2)
        angles = np.loadtxt(label_dir / "angles.csv", delimiter=",", ndmin=2)
    except (OSError, ValueError) as exc:
        raise AasceDataError(f"{label_dir}: cannot read the label CSV files ({exc})") from None
    if not (len(names) == len(landmarks) == len(angles)):
        raise AasceDataError(
            f"{label_dir}: filenames.csv, landmarks.csv and angles.csv have {len(names)}, {len(landmarks)} "
            f"and {len(angles)} rows"
        )
    return names, landmarks, angles
