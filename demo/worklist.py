"""A folder of X-rays to annotate: the image list, reading one image, and the annotations that already
exist for it (the tool's own JSON/CSV exports or an AASCE ``<image file name>.mat``).

    worklist = Worklist(Path("xrays"), annotations_dir=None)     # annotations beside the images
    worklist.names()                                             # sorted image file names
    gray = worklist.read(name)                                   # uint8 (rows, cols), as the page shows it
    found = worklist.existing_annotation(name, 68, width, height)   # Loaded or None

Names are file names inside the folder (never paths): anything not in the listing is refused, so a
request cannot reach another file; a symlink that leads out of the folder is neither listed nor read.
An image removed (or replaced by such a link) after the start leaves ``names()`` and raises
``ImageMissing`` when asked for.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from demo.export import export_filename
from demo.images import ImageError, decode_upload

__all__ = ["Worklist", "Loaded", "AnnotationFileError", "ImageMissing", "IMAGE_SUFFIXES", "read_annotation_file"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # compared ignoring case
MAX_IMAGE_FILE_BYTES = 200 * 2**20
MAX_ANNOTATION_FILE_BYTES = 4 * 2**20


class AnnotationFileError(ValueError):
    """An existing annotation file cannot be used; the message names the file and says why."""


class ImageMissing(LookupError):
    """An image of the list is no longer in the folder (removed after the start); the message names it."""


@dataclass
class Loaded:
    """Starting points read from a file: all points, which of them count as fixed, and remarks."""

    path: Path
    points_xy: np.ndarray  # (K, 2) float64 original pixels
    fixed: list[int]
    notes: list[str] = field(default_factory=list)


def _points_array(value, num_keypoints: int, path: Path) -> np.ndarray:
    try:
        points = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise AnnotationFileError(f"{path}: the points are not numbers") from None
    if points.shape != (num_keypoints, 2):
        raise AnnotationFileError(f"{path}: expected {num_keypoints} points (x, y), got an array of shape "
                                  f"{points.shape}")
    if not np.isfinite(points).all():
        raise AnnotationFileError(f"{path}: NaN or infinite coordinates at points "
                                  f"{np.flatnonzero(~np.isfinite(points).all(axis=1)).tolist()}")
    return points


def read_annotation_file(path: Path, num_keypoints: int) -> tuple[np.ndarray, list[int]]:
    """(points (K, 2) x/y original pixels, fixed indices) from a .mat (``p2``; every point counts as
    fixed: it was placed by a person), the tool's JSON export or its CSV export."""
    if path.stat().st_size > MAX_ANNOTATION_FILE_BYTES:
        raise AnnotationFileError(f"{path}: larger than {MAX_ANNOTATION_FILE_BYTES >> 20} MiB, not an annotation")
    suffix = path.suffix.lower()
    if suffix == ".mat":
        import scipy.io

        try:
            mat = scipy.io.loadmat(str(path))
        except Exception as exc:  # noqa: BLE001 - scipy raises many types for broken files
            raise AnnotationFileError(f"{path}: cannot read the MATLAB file ({type(exc).__name__}: {exc})") from None
        if "p2" not in mat:
            raise AnnotationFileError(f"{path}: no 'p2' variable (AASCE labels hold p2: {num_keypoints} x 2)")
        if np.asarray(mat["p2"]).dtype.kind not in "uif":
            raise AnnotationFileError(f"{path}: 'p2' must hold numbers")
        return _points_array(mat["p2"], num_keypoints, path), list(range(num_keypoints))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise AnnotationFileError(f"{path}: not UTF-8 text") from None
    if suffix == ".json":
        try:
            doc = json.loads(text, parse_constant=lambda name: math.nan)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise AnnotationFileError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or "points" not in doc:
            raise AnnotationFileError(f"{path}: expected the tool's JSON export (an object with 'points')")
        points = _points_array(doc["points"], num_keypoints, path)
        fixed = doc.get("fixed", [])
        if not (isinstance(fixed, list) and all(isinstance(i, int) and not isinstance(i, bool)
                                                and 0 <= i < num_keypoints for i in fixed)):
            raise AnnotationFileError(f"{path}: 'fixed' must list point indices 0..{num_keypoints - 1}")
        return points, sorted(set(fixed))
    if suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        if not rows or not {"index", "x", "y"} <= set(rows[0]):
            raise AnnotationFileError(f"{path}: expected the tool's CSV export (columns index, name, x, y, fixed)")
        try:
            order = [int(r["index"]) for r in rows]
            points = [[float(r["x"]), float(r["y"])] for r in rows]
            fixed = [int(r["index"]) for r in rows if r.get("fixed", "0").strip() == "1"]
        except (TypeError, ValueError):
            raise AnnotationFileError(f"{path}: a row holds a value that is not a number") from None
        if order != list(range(num_keypoints)):
            raise AnnotationFileError(f"{path}: rows must be points 0..{num_keypoints - 1} in order")
        return _points_array(points, num_keypoints, path), fixed
    raise AnnotationFileError(f"{path}: unknown annotation format (expected .mat, .json or .csv)")


class Worklist:
    def __init__(self, images_dir: str | Path, annotations_dir: str | Path | None = None):
        self.images_dir = Path(images_dir)
        if not self.images_dir.is_dir():
            raise ValueError(f"{self.images_dir}: image folder not found")
        self.annotations_dir = Path(annotations_dir) if annotations_dir else self.images_dir
        self._root = self.images_dir.resolve()
        self._names = sorted(n for n in os.listdir(self.images_dir)
                             if not n.startswith(".") and n.lower().endswith(IMAGE_SUFFIXES) and self._present(n))
        self._known = set(self._names)

    def _present(self, name: str) -> bool:
        """A regular file that is, after following links, inside the folder."""
        path = self.images_dir / name
        try:
            return path.is_file() and path.resolve().is_relative_to(self._root)
        except (OSError, RuntimeError):  # a link loop
            return False

    def names(self) -> list[str]:
        """The images of the list still in the folder, sorted."""
        return [n for n in self._names if self._present(n)]

    def missing(self) -> list[str]:
        """Images listed at the start that are no longer in the folder."""
        return [n for n in self._names if not self._present(n)]

    def path(self, name) -> Path:
        """The file of an image of the list; KeyError for any other name, ImageMissing if it was removed."""
        if not isinstance(name, str) or name not in self._known:
            raise KeyError(f"no image {name!r} in {self.images_dir}")
        if not self._present(name):
            raise ImageMissing(f"{self.images_dir / name}: no longer in the folder (removed after the server "
                               f"started)")
        return self.images_dir / name

    def read(self, name: str) -> np.ndarray:
        """The image as uint8 (rows, cols) grayscale, decoded like an upload (same limits)."""
        path = self.path(name)
        try:
            if path.stat().st_size > MAX_IMAGE_FILE_BYTES:
                raise ImageError(f"{path}: larger than {MAX_IMAGE_FILE_BYTES >> 20} MiB")
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageMissing(f"{path}: no longer in the folder (removed after the server started)") from None
        try:
            return decode_upload(data)
        except ImageError as exc:
            raise ImageError(f"{path}: {exc}") from None

    def annotation_candidates(self, name: str) -> list[Path]:
        """Files that may hold ``name``'s points, in the order they are tried."""
        stem = self.annotations_dir
        return [stem / f"{name}.mat", stem / f"{name}.json", stem / f"{name}.csv",
                stem / export_filename(name, "json"), stem / export_filename(name, "csv")]

    def existing_annotation(self, name: str, num_keypoints: int, width: int, height: int) -> Loaded | None:
        """The first candidate file that exists, read and checked; points outside the image are moved to
        its border (with a note), so that they can be sent back as fixed points."""
        for path in self.annotation_candidates(name):
            if path.is_file():
                points, fixed = read_annotation_file(path, num_keypoints)
                notes = []
                clipped = np.clip(points, 0, [width, height])
                moved = np.flatnonzero((clipped != points).any(axis=1))
                if moved.size:
                    notes.append(f"{path}: points {moved.tolist()} lay outside the {width} x {height} image and "
                                 f"were moved to its border")
                return Loaded(path, clipped, fixed, notes)
        return None
