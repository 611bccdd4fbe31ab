"""COCO keypoints JSON: the format CVAT, Label Studio and MMPose read and write, beside the AASCE tree.

    doc = coco_document([CocoImage("scan 1.jpg", 1000, 2500, points_xy, checked=[0, 1])], names)
    found = read_coco(doc, num_keypoints=68)     # {"scan 1.jpg": CocoPoints(...)}; CocoError says what is wrong

One category ("spine") whose ``keypoints`` are the point names in order (T1 top-left, T1 top-right, ...)
and whose ``skeleton`` is the vertebra outlines (1-based point numbers, as COCO counts). One annotation
per image: ``keypoints`` = [x, y, v] * K in original pixels (x = column, y = row, the frame of AASCE's
``p2``), values kept exactly; v = 2 (placed and visible) for every point the tool has, 0 for none.
Which points a person checked (fixed) is kept in the annotation's ``attributes.checked`` (0-based
indices), where CVAT keeps per-object attributes; other readers ignore it. On import without it, every
labelled point (v > 0) counts as checked: a person placed it. Points with v = 0 are predicted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["CocoError", "CocoImage", "CocoPoints", "coco_document", "folder_coco", "read_coco",
           "vertebra_skeleton", "CATEGORY_NAME"]

CATEGORY_NAME = "spine"
CORNER_RING = (0, 1, 3, 2)  # a vertebra's outline: top-left, top-right, bottom-right, bottom-left
VISIBLE = 2  # COCO: labelled and visible


class CocoError(ValueError):
    """A COCO document cannot be read; the message names the image or key and says why."""


@dataclass
class CocoImage:
    """One image's points for the export."""

    file_name: str
    width: int
    height: int
    points_xy: np.ndarray  # (K, 2) original pixels
    checked: list[int] = field(default_factory=list)
    done: bool = False


@dataclass
class CocoPoints:
    """One image's points read from a document."""

    file_name: str
    width: int
    height: int
    points_xy: np.ndarray  # (K, 2); rows of unlabelled points are 0
    labelled: list[int]  # v > 0
    checked: list[int]  # fixed: never moved by the model
    done: bool = False  # attributes.done (the tool's own exports)


def vertebra_skeleton(num_keypoints: int) -> list[list[int]]:
    """The outline edges of each vertebra (4 corners), 1-based as COCO's ``skeleton``."""
    edges = []
    for first in range(0, num_keypoints - num_keypoints % 4, 4):
        ring = [first + k for k in CORNER_RING]
        edges += [[ring[k] + 1, ring[(k + 1) % 4] + 1] for k in range(4)]
    return edges


def coco_document(images: list[CocoImage], keypoint_names: list[str], description: str = "") -> dict:
    """A COCO keypoints document of ``images`` (ids from 1, in the order given)."""
    k = len(keypoint_names)
    doc_images, annotations = [], []
    for image_id, image in enumerate(images, start=1):
        points = np.asarray(image.points_xy, dtype=np.float64)
        if points.shape != (k, 2):
            raise ValueError(f"{image.file_name}: expected {k} points, got shape {points.shape}")
        x0, y0 = points.min(axis=0).tolist()
        x1, y1 = points.max(axis=0).tolist()
        doc_images.append({"id": image_id, "file_name": image.file_name, "width": int(image.width),
                           "height": int(image.height)})
        keypoints = []
        for x, y in points.tolist():
            keypoints += [x, y, VISIBLE]
        annotations.append({
            "id": image_id, "image_id": image_id, "category_id": 1, "keypoints": keypoints, "num_keypoints": k,
            "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0, "segmentation": [],
            "attributes": {"checked": sorted(int(i) for i in image.checked), "done": bool(image.done)},
        })
    return {
        "info": {"description": description or "spine keypoints (68 vertebra corners, AASCE order)",
                 "version": "1.0"},
        "licenses": [],
        "images": doc_images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": CATEGORY_NAME, "supercategory": CATEGORY_NAME,
                        "keypoints": list(keypoint_names), "skeleton": vertebra_skeleton(k)}],
    }


def folder_coco(worklist, store, keypoint_names: list[str], size_of=None) -> dict:
    """The COCO document of every image of a ``demo.worklist.Worklist`` with points in its
    ``demo.store.AnnotationStore`` (the shown entry of each history; checked points and done marks in
    ``attributes``). ``size_of(name) -> (width, height)``; default: the image decoded as the tool shows it."""
    def decoded_size(name):
        rows, cols = worklist.read(name).shape
        return cols, rows

    size_of = size_of or decoded_size
    entries = []
    for name in worklist.names():
        record = store.current(name)
        if record is not None:
            width, height = size_of(name)
            entries.append(CocoImage(name, width, height, np.array(record.points_xy, dtype=np.float64),
                                     sorted(record.fixed_xy), store.is_done(name)))
    return coco_document(entries, keypoint_names, f"spine keypoints of {worklist.images_dir.name}")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _index_list(value, k: int, where: str) -> list[int]:
    if not (isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < k
                                            for i in value)):
        raise CocoError(f"{where}: must list point indices 0..{k - 1}")
    return sorted(set(value))


def _need(obj, key: str, kind, where: str):
    if not isinstance(obj, dict) or key not in obj:
        raise CocoError(f"{where}: no '{key}' (a COCO keypoints file needs it)")
    if not isinstance(obj[key], kind) or isinstance(obj[key], bool):
        raise CocoError(f"{where}: '{key}' has the wrong type ({type(obj[key]).__name__})")
    return obj[key]


def read_coco(doc, num_keypoints: int) -> dict[str, CocoPoints]:
    """{file name: points} of a COCO keypoints document with ``num_keypoints`` points per annotation.

    The whole document is checked before anything is returned; CocoError on the first problem.
    Annotations of other categories (whose keypoint count differs) are refused rather than guessed.
    """
    k = num_keypoints
    if not isinstance(doc, dict):
        raise CocoError("a COCO file is a JSON object with 'images', 'annotations' and 'categories'")
    categories = _need(doc, "categories", list, "the document")
    images = _need(doc, "images", list, "the document")
    annotations = _need(doc, "annotations", list, "the document")
    category_ids = set()
    for n, category in enumerate(categories):
        where = f"categories[{n}]"
        names = _need(category, "keypoints", list, where)
        if len(names) != k:
            raise CocoError(f"{where} ({category.get('name')!r}) has {len(names)} keypoints; the tool's model has {k}")
        category_ids.add(_need(category, "id", int, where))
    by_id = {}
    for n, image in enumerate(images):
        where = f"images[{n}]"
        image_id = _need(image, "id", int, where)
        name = _need(image, "file_name", str, where)
        width, height = _need(image, "width", int, where), _need(image, "height", int, where)
        if image_id in by_id:
            raise CocoError(f"{where}: image id {image_id} appears twice")
        by_id[image_id] = (name.replace("\\", "/").rsplit("/", 1)[-1], width, height)
    found: dict[str, CocoPoints] = {}
    for n, annotation in enumerate(annotations):
        where = f"annotations[{n}]"
        image_id = _need(annotation, "image_id", int, where)
        if image_id not in by_id:
            raise CocoError(f"{where}: image_id {image_id} is not in 'images'")
        if _need(annotation, "category_id", int, where) not in category_ids:
            raise CocoError(f"{where}: category_id {annotation['category_id']} is not in 'categories'")
        name, width, height = by_id[image_id]
        where = f"{where} ({name})"
        values = _need(annotation, "keypoints", list, where)
        if len(values) != 3 * k or not all(_number(v) for v in values):
            raise CocoError(f"{where}: 'keypoints' must be {3 * k} finite numbers ([x, y, v] x {k}), "
                            f"got {len(values)} values")
        triples = np.array(values, dtype=np.float64).reshape(k, 3)
        visibility = triples[:, 2]
        if not np.isin(visibility, (0, 1, 2)).all():
            raise CocoError(f"{where}: visibility flags must be 0, 1 or 2")
        labelled = np.flatnonzero(visibility > 0).tolist()
        points = triples[:, :2].copy()
        points[visibility == 0] = 0.0
        outside = [i for i in labelled if not (0 <= points[i, 0] <= width and 0 <= points[i, 1] <= height)]
        if outside:
            raise CocoError(f"{where}: points {outside} lie outside the {width} x {height} image")
        attributes = annotation.get("attributes") or {}
        if isinstance(attributes, dict) and "checked" in attributes:
            checked = _index_list(attributes["checked"], k, f"{where}: attributes.checked")
            if not set(checked) <= set(labelled):
                raise CocoError(f"{where}: attributes.checked names points that have no position (v = 0)")
        else:
            checked = labelled
        if name in found:
            raise CocoError(f"{where}: a second annotation for {name}; the tool keeps one spine per image")
        done = isinstance(attributes, dict) and attributes.get("done") is True
        found[name] = CocoPoints(name, width, height, points, labelled, checked, done)
    return found
