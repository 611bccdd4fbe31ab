"""An annotated folder as a raw AASCE tree (``boostnet_labeldata``), ready for ``data_preprocessing.py``:

    OUT/data/training/<image>.jpg          OUT/labels/training/<image>.jpg.mat  (p2: (68, 2) x, y px)
    OUT/data/test/<image>.jpg              OUT/labels/test/<image>.jpg.mat
    OUT/labels/<split>/filenames.csv, landmarks.csv, angles.csv   (the challenge's formats and Cobb method)

    report = export_folder(worklist, store, Path("OUT"), every=False)   # images marked done
    # then: python data_preprocessing.py --source OUT --val-size N

``p2`` holds the stored points exactly (float64). Preprocessing needs a ``test`` split, so every
``1 / test_share``-th image (by name) goes there (at least one); the rest is ``training``. Images are
copied byte for byte when they are 8-bit grayscale JPEGs without an EXIF rotation (what preprocessing
reads is then exactly what the annotator saw); any other image is written as a JPEG of the grayscale
pixels the tool showed. The tree is written into a temporary sibling folder and renamed into place:
there is never a half-written OUT.
"""
from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from demo.store import AnnotationStore
from demo.worklist import ImageMissing, Worklist

__all__ = ["ExportError", "export_folder", "split_names", "DEFAULT_TEST_SHARE"]

DEFAULT_TEST_SHARE = 0.2
JPEG_QUALITY = 95


class ExportError(ValueError):
    """The export cannot be made; one line that says why."""


def split_names(names: list[str], test_share: float) -> tuple[list[str], list[str]]:
    """(training, test) from sorted names: ``round(share * n)`` test images (at least 1), evenly spaced."""
    names = sorted(names)
    count = max(1, round(test_share * len(names)))
    picks = set(np.linspace(0, len(names) - 1, count).round().astype(int).tolist())
    return [n for i, n in enumerate(names) if i not in picks], [n for i, n in enumerate(names) if i in picks]


def _copyable(path: Path) -> bool:
    """An 8-bit grayscale JPEG without EXIF rotation: preprocessing decodes it to what the tool showed."""
    if path.suffix.lower() not in (".jpg", ".jpeg"):
        return False
    with Image.open(path) as image:
        return image.format == "JPEG" and image.mode == "L" and image.getexif().get(0x0112, 1) == 1


def _selected(worklist: Worklist, store: AnnotationStore, every: bool, num_keypoints: int) -> dict:
    """{name: points (K, 2)} of the images to export; ImageMissing if one of them left the folder."""
    gone = [name for name in worklist.missing() if store.current(name) is not None and (every or store.is_done(name))]
    if gone:
        raise ImageMissing(f"{len(gone)} annotated image(s) were removed from {worklist.images_dir} after the "
                           f"server started ({', '.join(gone[:5])}{', ...' if len(gone) > 5 else ''}): put them "
                           f"back, or restart the server to export without them")
    chosen = {}
    for name in worklist.names():
        record = store.current(name)
        if record is not None and (every or store.is_done(name)):
            chosen[name] = np.array(record.points_xy, dtype=np.float64)
        elif record is None and every and any(p.is_file() for p in worklist.annotation_candidates(name)):
            gray = worklist.read(name)
            loaded = worklist.existing_annotation(name, num_keypoints, gray.shape[1], gray.shape[0])
            chosen[name] = loaded.points_xy
    return chosen


def export_folder(worklist: Worklist, store: AnnotationStore, out: Path, *, every: bool = False,
                  test_share: float = DEFAULT_TEST_SHARE, num_keypoints: int = 68) -> dict:
    """Write the tree to ``out`` (which must not exist); returns a report for people and the page."""
    from dataset.aasce_io import write_label_csvs
    from misc.cobb import cobb_angles

    out = Path(out)
    if out.exists():
        raise ExportError(f"{out}: already exists; choose a new folder for the export")
    if not 0 < test_share < 1:
        raise ExportError(f"the test share must be between 0 and 1, got {test_share}")
    chosen = _selected(worklist, store, every, num_keypoints)
    if len(chosen) < 2:
        what = "have points" if every else "are marked done"
        raise ExportError(f"{len(chosen)} image(s) of {worklist.images_dir} {what}; the export needs at least 2 "
                          f"(one for training, one for the test split)"
                          + ("" if every else "; mark images done, or export every image with points (--all)"))
    exported = {}  # exported file name -> source name
    for name in chosen:
        target = name if _copyable(worklist.path(name)) else f"{Path(name).stem}.jpg"
        if target in exported:
            raise ExportError(f"{name} and {exported[target]} would both be exported as {target}; rename one")
        exported[target] = name
    training, test = split_names(list(exported), test_share)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        for split, names in (("training", training), ("test", test)):
            image_dir, label_dir = tmp / "data" / split, tmp / "labels" / split
            image_dir.mkdir(parents=True)
            label_dir.mkdir(parents=True)
            sizes, points, angles = [], [], []
            for target in names:
                source = worklist.path(exported[target])
                points_xy = chosen[exported[target]]
                if target == source.name:
                    shutil.copyfile(source, image_dir / target)
                    with Image.open(source) as image:
                        cols, rows = image.size
                else:
                    gray = worklist.read(source.name)
                    Image.fromarray(gray).save(image_dir / target, format="JPEG", quality=JPEG_QUALITY)
                    rows, cols = gray.shape
                scipy.io.savemat(label_dir / f"{target}.mat", {"p2": points_xy})
                sizes.append((rows, cols))
                points.append(points_xy)
                angles.append(cobb_angles(points_xy, rows, degenerate="zero")["angles"])
            write_label_csvs(label_dir, names, points, sizes, angles)
        os.replace(tmp, out)
    except FileNotFoundError as exc:  # an image removed while the export ran
        shutil.rmtree(tmp, ignore_errors=True)
        raise ImageMissing(f"{exc.filename}: removed from the folder during the export; nothing was written") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    val_size = len(training) // 10  # preprocessing draws the validation images from training
    return {"path": str(out), "training": len(training), "test": len(test), "images": sorted(exported),
            "command": f"python data_preprocessing.py --source '{out}' --val-size {val_size}"}
