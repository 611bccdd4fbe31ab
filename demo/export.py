"""Exports of the current points: JSON, CSV, an AASCE-style MATLAB file (``p2``, (K, 2), (x, y)
original pixels) and COCO keypoints JSON (``demo.coco``). Pure functions, bytes out; the server only adds
HTTP headers."""
from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import scipy.io

__all__ = ["FORMATS", "export_bytes", "export_filename", "cobb_summary"]

FORMATS = {"json": "application/json", "csv": "text/csv; charset=utf-8", "mat": "application/x-matlab-data",
           "coco": "application/json"}
_SUFFIXES = {"coco": "coco.json"}  # COCO keypoints JSON (demo.coco): 'scan_1_keypoints.coco.json'


def cobb_summary(points_xy: np.ndarray, height: int, names: list[str]) -> dict | None:
    """The three Cobb angles (``misc.cobb``, challenge method) with their end vertebrae, or None
    when the points are not the 68 AASCE corners."""
    from misc.cobb import NUM_KEYPOINTS, cobb_angles

    if points_xy.shape != (NUM_KEYPOINTS, 2):
        return None
    try:
        result = cobb_angles(points_xy, height, degenerate="zero")
    except ValueError:
        return None
    return {"angles": [round(a, 2) for a in result["angles"]],
            # angles.csv order; by the challenge method the first is the largest angle between any two
            # vertebrae, so the customary names PT / MT / TL-L would mislabel them: say what they are
            "labels": ["Main", "Second", "Third"],
            "label_names": ["the largest angle between two vertebrae", "the second angle of the challenge method",
                            "the third angle of the challenge method"],
            "vertebrae": [[names[a], names[b]] for a, b in result["vertebrae"]],
            "s_shaped": bool(result["s_shaped"])}


def export_filename(image_name: str, fmt: str) -> str:
    """'scan 1.jpg' -> 'scan_1_keypoints.csv' (ASCII letters, digits, '-', '_' and '.' only)."""
    stem = re.sub(r"\.(jpe?g|png)$", "", image_name, flags=re.IGNORECASE)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "xray"
    return f"{stem[:80]}_keypoints.{_SUFFIXES.get(fmt, fmt)}"


def export_bytes(fmt: str, *, image_name: str, width: int, height: int, points_xy: np.ndarray,
                 fixed: list[int], keypoint_names: list[str], cobb: dict | None = None) -> bytes:
    """The points in ``fmt`` ('json', 'csv' or 'mat'); coordinates are (x, y) original pixels."""
    points_xy = np.asarray(points_xy, dtype=np.float64)
    fixed_set = set(fixed)
    if fmt == "json":
        doc = {"image": image_name, "width": width, "height": height, "coordinates": "x, y in original pixels",
               "points": points_xy.tolist(), "fixed": sorted(fixed_set), "names": keypoint_names,
               "cobb": cobb}
        return (json.dumps(doc, indent=1) + "\n").encode()
    if fmt == "csv":
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["index", "name", "x", "y", "fixed"])
        for index, ((x, y), name) in enumerate(zip(points_xy.tolist(), keypoint_names)):
            writer.writerow([index, name, repr(x), repr(y), int(index in fixed_set)])
        return text.getvalue().encode()
    if fmt == "mat":
        buffer = io.BytesIO()
        scipy.io.savemat(buffer, {"p2": points_xy})
        return buffer.getvalue()
    if fmt == "coco":
        from demo.coco import CocoImage, coco_document

        doc = coco_document([CocoImage(image_name, width, height, points_xy, sorted(fixed_set))], keypoint_names)
        return (json.dumps(doc) + "\n").encode()
    raise ValueError(f"unknown export format {fmt!r}; choose one of {sorted(FORMATS)}")
