"""Reading and validating a raw AASCE tree (dataset/aasce_io.py)."""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image, ImageFile

from dataset.aasce_io import (
    AasceDataError,
    find_pairs,
    image_stem,
    landmarks_row,
    points_outside,
    read_image,
    read_label,
    read_label_csvs,
    write_label_csvs,
)
from conftest import SHARED

REAL_TREE = SHARED / "aasce" / "boostnet_labeldata"


def need_real_tree() -> Path:
    if not REAL_TREE.is_dir():
        pytest.skip(f"../shared/aasce not present: {REAL_TREE} holds the real AASCE copy these checks compare with")
    return REAL_TREE


def jpeg_bytes(rows=64, cols=32, seed=0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (rows, cols), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, "JPEG")
    return buffer.getvalue()


def make_tree(root: Path, names_by_split: dict[str, list[str]], labels=True) -> Path:
    """A minimal tree: tiny JPEGs and 68-point labels for the given image names."""
    for split, names in names_by_split.items():
        (root / "data" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for name in names:
            (root / "data" / split / name).write_bytes(jpeg_bytes())
            if labels:
                scipy.io.savemat(root / "labels" / split / f"{name}.mat", {"p2": np.ones((68, 2), np.uint16)})
    return root


# --------------------------------------------------------------------------------------------------------
# pairing
# --------------------------------------------------------------------------------------------------------
def test_pairs_every_image_with_its_label_sorted(synthetic_tree):
    pairs, problems, notes = find_pairs(synthetic_tree)
    assert problems == [] and notes == []
    assert [p.split for p in pairs] == ["training"] * 12 + ["test"] * 4
    for split in ("training", "test"):
        names = [p.name for p in pairs if p.split == split]
        assert names == sorted(names)
    for pair in pairs:
        assert pair.label_path.name == pair.name + ".mat"
        assert pair.rel_image == f"data/{pair.split}/{pair.name}"
        assert pair.rel_npy == f"data/{pair.split}/{pair.name[:-4]}.npy"


def test_names_with_spaces_parentheses_and_case_only_differences_stay_apart(tmp_path):
    names = ["p-1 A AP.jpg", "p-1 a ap.jpg", "p-1 A AP (2).jpg"]
    root = make_tree(tmp_path / "tree", {"training": names, "test": ["q B AP.jpg"]})
    if len(list((root / "data" / "training").iterdir())) < 3:
        pytest.skip("case-insensitive file system: names differing only in case cannot coexist")
    pairs, problems, notes = find_pairs(root)
    assert problems == [] and notes == []
    assert {p.name: p.label_path.name for p in pairs if p.split == "training"} == {n: n + ".mat" for n in names}


def test_label_differing_only_in_case_is_paired_with_a_note(tmp_path):
    root = make_tree(tmp_path / "tree", {"training": ["x A AP.jpg"], "test": ["y A AP.jpg"]})
    (root / "labels" / "training" / "x A AP.jpg.mat").rename(root / "labels" / "training" / "x a ap.jpg.mat")
    pairs, problems, notes = find_pairs(root)
    assert problems == []
    assert pairs[0].label_path.name == "x a ap.jpg.mat"
    assert len(notes) == 1 and "x A AP.jpg" in notes[0] and "letter case" in notes[0]


def test_unpaired_files_and_missing_folders_are_all_reported(tmp_path):
    root = make_tree(tmp_path / "tree", {"training": ["a AP.jpg", "b AP.jpg"], "test": ["c AP.jpg"]})
    (root / "labels" / "training" / "a AP.jpg.mat").unlink()  # image without label
    (root / "data" / "training" / "b AP.jpg").unlink()  # label without image, and no image left...
    (root / "data" / "training" / "d AP.jpg").write_bytes(jpeg_bytes())  # ... except this unpaired one
    shutil.rmtree(root / "labels" / "test")
    _, problems, _ = find_pairs(root)
    text = "\n".join(problems)
    assert "a AP.jpg: image without a label" in text
    assert "b AP.jpg.mat: label without an image" in text
    assert "d AP.jpg: image without a label" in text
    assert f"{root / 'labels' / 'test'}: folder not found" in text
    assert len(problems) == 4


def test_missing_source_or_top_folders(tmp_path):
    _, problems, _ = find_pairs(tmp_path / "nowhere")
    assert len(problems) == 1 and "nowhere" in problems[0] and "not found" in problems[0]
    (tmp_path / "tree" / "data").mkdir(parents=True)
    _, problems, _ = find_pairs(tmp_path / "tree")
    assert problems == [f"{tmp_path / 'tree' / 'labels'}: folder not found (a boostnet_labeldata tree has data/ "
                        "and labels/)"]


def test_stray_files_are_ignored_with_a_note(tmp_path):
    root = make_tree(tmp_path / "tree", {"training": ["a AP.jpg"], "test": ["c AP.jpg"]})
    (root / "data" / "training" / "notes.txt").write_text("x")
    (root / "data" / "training" / ".DS_Store").write_text("x")
    pairs, problems, notes = find_pairs(root)
    assert problems == [] and len(pairs) == 2
    assert len(notes) == 1 and "notes.txt" in notes[0]


def test_image_stem():
    assert image_stem("a b (2).jpg") == "a b (2)"
    assert image_stem("X.JPG") == "X"
    with pytest.raises(ValueError):
        image_stem("x.png")


# --------------------------------------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------------------------------------
def test_read_label_keeps_the_stored_values(tmp_path):
    p2 = np.arange(136, dtype=np.uint16).reshape(68, 2)
    scipy.io.savemat(tmp_path / "a.jpg.mat", {"p2": p2})
    out = read_label(tmp_path / "a.jpg.mat")
    assert out.dtype == np.uint16 and np.array_equal(out, p2)


@pytest.mark.parametrize(
    "content, expected",
    [
        ({"q": np.zeros((68, 2))}, "no 'p2' variable"),
        ({"p2": np.zeros((67, 2))}, "shape (67, 2), expected (68, 2)"),
        ({"p2": np.zeros((68, 3))}, "shape (68, 3), expected (68, 2)"),
        ({"p2": np.zeros((2, 68))}, "shape (2, 68), expected (68, 2)"),
        ({"p2": np.where(np.arange(136).reshape(68, 2) == 7, np.nan, 1.0)},
         "NaN or infinite coordinates at keypoints [3]"),
        ({"p2": np.where(np.arange(136).reshape(68, 2) == 20, np.inf, 1.0)},
         "NaN or infinite coordinates at keypoints [10]"),
        ({"p2": "sixty-eight points"}, "must hold real numbers"),
    ],
)
def test_bad_labels_name_the_file_and_the_problem(tmp_path, content, expected):
    path = tmp_path / "bad label.jpg.mat"
    scipy.io.savemat(path, content)
    with pytest.raises(AasceDataError) as info:
        read_label(path)
    assert str(path) in str(info.value) and expected in str(info.value)


def test_corrupt_mat_file(tmp_path):
    path = tmp_path / "x.jpg.mat"
    path.write_bytes(b"this is not a MATLAB file at all" * 10)
    with pytest.raises(AasceDataError, match="cannot read the MATLAB label file") as info:
        read_label(path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------------------
def test_read_image_decodes_grayscale(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(jpeg_bytes(40, 20))
    pixels = read_image(path)
    assert pixels.shape == (40, 20) and pixels.dtype == np.uint8


@pytest.mark.parametrize("cut", [2, 100, 1000])
def test_truncated_jpeg_is_rejected_even_if_pil_was_told_to_accept_it(tmp_path, monkeypatch, cut):
    data = jpeg_bytes(200, 100)
    path = tmp_path / "cut (1).jpg"
    path.write_bytes(data[: len(data) - cut])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some other library might do
    with pytest.raises(AasceDataError, match="unreadable or truncated image") as info:
        read_image(path)
    assert str(path) in str(info.value)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored afterwards


def test_not_an_image(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(AasceDataError, match="unreadable or truncated image"):
        read_image(path)


def test_colour_converted_with_a_note_and_16_bit_rejected(tmp_path):
    rgb = tmp_path / "rgb.jpg"
    Image.new("RGB", (8, 16), (10, 200, 30)).save(rgb, "JPEG")
    notes: list[str] = []
    assert read_image(rgb, notes).shape == (16, 8)
    assert len(notes) == 1 and "rgb.jpg" in notes[0]
    deep = tmp_path / "deep.jpg"  # a 16-bit PNG under a .jpg name
    Image.fromarray(np.full((8, 8), 4000, np.uint16)).save(deep, "PNG")
    with pytest.raises(AasceDataError, match="unsupported image mode"):
        read_image(deep)


def test_points_outside_uses_the_official_bounds():
    pts = np.array([[0, 0], [100, 50], [100.5, 10], [10, 50.5], [-0.5, 3], [3, -1]])
    assert points_outside(pts, (50, 100)).tolist() == [False, False, True, True, True, True]


# --------------------------------------------------------------------------------------------------------
# CSV files
# --------------------------------------------------------------------------------------------------------
def test_label_csvs_round_trip_in_the_real_format(tmp_path):
    pts = np.random.default_rng(0).uniform(0, 500, (68, 2))
    write_label_csvs(tmp_path, ["a b (2).jpg"], [pts], [(1000, 600)], [[12.3456789, 0.0, 3.25]])
    raw = (tmp_path / "angles.csv").read_bytes()
    assert raw == b"12.346,0,3.25\r\n"
    names, landmarks, angles = read_label_csvs(tmp_path)
    assert names == ["a b (2).jpg"] and landmarks.shape == (1, 136) and angles.shape == (1, 3)
    assert np.allclose(landmarks[0, :68], pts[:, 0] / 600, rtol=1e-4)
    assert np.allclose(landmarks[0, 68:], pts[:, 1] / 1000, rtol=1e-4)


def test_landmarks_format_reproduces_the_real_files_exactly():
    root = need_real_tree()
    names, _, _ = read_label_csvs(root / "labels" / "test")
    lines = (root / "labels" / "test" / "landmarks.csv").read_bytes().split(b"\r\n")
    for row, name in list(enumerate(names))[:5]:
        p2 = read_label(root / "labels" / "test" / f"{name}.mat")
        with Image.open(root / "data" / "test" / name) as image:
            cols, rows = image.size
        ours = ",".join("%.5g" % v for v in landmarks_row(p2, (rows, cols)))
        assert ours.encode() == lines[row], name
