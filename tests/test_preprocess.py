"""Preprocessing a raw AASCE tree into the official layout (dataset/preprocess.py, data_preprocessing.py)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
from PIL import Image

import data_preprocessing
from dataset.aasce_io import AasceDataError, read_label
from dataset.preprocess import (
    OutputExistsError,
    load_samples,
    output_folder_name,
    points_key,
    preprocess,
    resize_image,
    resize_points_xy,
    split_training,
)
from conftest import SHARED

REAL_TREE = SHARED / "aasce" / "boostnet_labeldata"
SIZE = (512, 256)


def tree_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(target: Path) -> list[str]:
    return sorted(p.name for p in target.iterdir()) if target.exists() else []


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def training_names(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "data" / "training").iterdir())


def set_point(root: Path, split: str, name: str, keypoint: int, xy) -> None:
    path = root / "labels" / split / f"{name}.mat"
    p2 = read_label(path).astype(np.float64)
    p2[keypoint] = xy
    scipy.io.savemat(path, {"p2": p2})


@pytest.fixture(scope="module")
def dataset_dir(synthetic_tree, tmp_path_factory) -> Path:
    """The synthetic tree preprocessed with 3 validation images, plain loop."""
    target = tmp_path_factory.mktemp("preprocessed")
    report = preprocess(synthetic_tree, target, SIZE, val_size=3, seed=0, workers=1)
    assert report.output_dir == target / "dataset16_512"
    return report.output_dir


# --------------------------------------------------------------------------------------------------------
# pure pieces
# --------------------------------------------------------------------------------------------------------
def test_resize_points_scales_x_by_cols_and_y_by_rows():
    pts = np.array([[0.0, 0.0], [100.0, 300.0], [400.0, 1200.0]])
    out = resize_points_xy(pts, raw_size_row_col=(1200, 400), out_size_row_col=(512, 256))
    assert np.array_equal(out, pts * np.array([256 / 400, 512 / 1200]))
    assert out[2].tolist() == [256.0, 512.0]
    assert out.dtype == np.float64 and out is not pts
    assert resize_points_xy(np.array([[7, 9]], np.uint16), (10, 10), (10, 10)).tolist() == [[7.0, 9.0]]


@pytest.mark.parametrize("bad", [dict(points_xy=np.zeros((68, 3))), dict(raw_size_row_col=(0, 10)),
                                 dict(out_size_row_col=(512,))])
def test_resize_points_rejects_bad_arguments(bad):
    args = dict(points_xy=np.zeros((68, 2)), raw_size_row_col=(100, 50), out_size_row_col=(512, 256)) | bad
    with pytest.raises(ValueError):
        resize_points_xy(**args)


def test_resize_image_is_bilinear_like_albumentations_resize():
    gray = np.random.default_rng(0).integers(0, 256, (301, 157), dtype=np.uint8)
    ours = resize_image(gray, SIZE)
    assert ours.shape == SIZE and ours.dtype == np.uint8
    assert np.array_equal(ours, cv2.resize(gray, (256, 512), interpolation=cv2.INTER_LINEAR))
    albumentations = pytest.importorskip("albumentations")
    theirs = albumentations.Resize(*SIZE)(image=np.repeat(gray[:, :, None], 3, -1))["image"]
    assert np.array_equal(np.repeat(ours[:, :, None], 3, -1), theirs)


def test_split_is_seeded_sorted_and_disjoint():
    train, val = split_training(20, 5, seed=0)
    assert (train, val) == split_training(20, 5, seed=0)
    assert val == sorted(val) and train == sorted(train) and len(val) == 5
    assert sorted(train + val) == list(range(20))
    assert split_training(20, 5, seed=1)[1] != val
    assert split_training(4, 0, seed=0) == ([0, 1, 2, 3], [])
    with pytest.raises(ValueError):
        split_training(4, 5, seed=0)


def test_names():
    assert output_folder_name((512, 256)) == "dataset16_512" and points_key((768, 384)) == "points_768"


# --------------------------------------------------------------------------------------------------------
# a whole run on a small synthetic tree
# --------------------------------------------------------------------------------------------------------
def test_output_layout_and_counts(dataset_dir):
    tables = {split: json.loads((dataset_dir / f"{split}.json").read_text()) for split in ("train", "val", "test")}
    assert {k: len(v) for k, v in tables.items()} == {"train": 9, "val": 3, "test": 4}
    images = [e["image"] for t in tables.values() for e in t]
    assert len(set(images)) == 16
    assert all(e["image"].startswith("data/training/") for e in tables["train"] + tables["val"])
    assert all(e["image"].startswith("data/test/") for e in tables["test"])
    for table in tables.values():
        assert [e["image"] for e in table] == sorted(e["image"] for e in table)
    manifest = json.loads((dataset_dir / "preprocessing.json").read_text())
    assert manifest["counts"] == {"train": 9, "val": 3, "test": 4} and manifest["dropped"] == []


def test_entries_match_the_raw_files(dataset_dir, synthetic_tree):
    for split in ("train", "val", "test"):
        for entry in json.loads((dataset_dir / f"{split}.json").read_text()):
            assert sorted(entry) == ["image", "label", "pixelSpacing", "points_512", "raw_size_row_col"]
            raw_image = synthetic_tree / entry["image"].replace(".npy", ".jpg")
            raw_label = synthetic_tree / entry["image"].replace("data/", "labels/").replace(".npy", ".jpg.mat")
            p2 = scipy.io.loadmat(raw_label)["p2"]
            with Image.open(raw_image) as image:
                gray = np.array(image)
            rows, cols = gray.shape
            assert entry["label"] == p2.tolist()
            assert entry["raw_size_row_col"] == [rows, cols]
            assert entry["pixelSpacing"] == [1, 1]
            points = np.array(entry["points_512"])
            assert np.array_equal(points[:, 0], p2[:, 0] * (256 / cols))
            assert np.array_equal(points[:, 1], p2[:, 1] * (512 / rows))
            array = np.load(dataset_dir / entry["image"])
            assert array.shape == (512, 256, 3) and array.dtype == np.uint8
            assert np.array_equal(array[:, :, 0], array[:, :, 1]) and np.array_equal(array[:, :, 0], array[:, :, 2])
            assert np.array_equal(array[:, :, 0], cv2.resize(gray, (256, 512), interpolation=cv2.INTER_LINEAR))


def test_rerun_is_byte_identical_and_needs_overwrite(dataset_dir, synthetic_tree):
    before = tree_files(dataset_dir)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        preprocess(synthetic_tree, dataset_dir.parent, SIZE, val_size=3, seed=0, workers=1)
    assert tree_files(dataset_dir) == before
    preprocess(synthetic_tree, dataset_dir.parent, SIZE, val_size=3, seed=0, workers=1, overwrite=True)
    assert tree_files(dataset_dir) == before
    assert leftovers(dataset_dir.parent) == ["dataset16_512"]  # no temporary or old folder left


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_parallel_workers_give_the_same_dataset_as_a_plain_loop(dataset_dir, synthetic_tree, tmp_path, backend):
    report = preprocess(synthetic_tree, tmp_path, SIZE, val_size=3, seed=0, workers=2, backend=backend)
    assert tree_files(report.output_dir) == tree_files(dataset_dir)


def test_truncated_jpegs_are_caught_by_parallel_threads_whatever_pil_was_told(synthetic_tree, tmp_path,
                                                                               monkeypatch):
    from PIL import ImageFile

    root = copy_tree(synthetic_tree, tmp_path / "raw")
    names = training_names(root)
    for name in names[::2]:
        path = root / "data" / "training" / name
        path.write_bytes(path.read_bytes()[:-300])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(AasceDataError) as info:
        preprocess(root, tmp_path / "out", SIZE, val_size=3, seed=0, workers=4, backend="thread")
    assert len(info.value.problems) == len(names[::2])
    assert all("unreadable or truncated image" in p for p in info.value.problems)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


def test_bad_backend(synthetic_tree, tmp_path):
    with pytest.raises(ValueError, match="backend"):
        preprocess(synthetic_tree, tmp_path, SIZE, val_size=3, backend="gpu")


def test_seed_changes_only_the_split(dataset_dir, synthetic_tree, tmp_path):
    report = preprocess(synthetic_tree, tmp_path, SIZE, val_size=3, seed=5, workers=1)
    val = json.loads((report.output_dir / "val.json").read_text())
    assert [e["image"] for e in val] != [e["image"] for e in json.loads((dataset_dir / "val.json").read_text())]
    assert (report.output_dir / "test.json").read_bytes() == (dataset_dir / "test.json").read_bytes()


def test_other_size(synthetic_tree, tmp_path):
    report = preprocess(synthetic_tree, tmp_path, (64, 32), val_size=2, seed=0, workers=1)
    assert report.output_dir.name == "dataset16_64"
    entry = json.loads((report.output_dir / "train.json").read_text())[0]
    assert np.load(report.output_dir / entry["image"]).shape == (64, 32, 3) and "points_64" in entry


# --------------------------------------------------------------------------------------------------------
# bad input: every problem named, nothing written
# --------------------------------------------------------------------------------------------------------
def _break_missing_folder(root, names):
    shutil.rmtree(root / "labels" / "test")
    return [f"{root / 'labels' / 'test'}: folder not found"]


def _break_image_without_label(root, names):
    (root / "labels" / "training" / f"{names[1]}.mat").unlink()
    return [f"{names[1]}: image without a label"]


def _break_label_without_image(root, names):
    (root / "data" / "training" / names[2]).unlink()
    return [f"{names[2]}.mat: label without an image"]


def _break_truncated_jpeg(root, names):
    path = root / "data" / "training" / names[3]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return [f"{names[3]}: unreadable or truncated image"]


def _break_not_a_jpeg(root, names):
    (root / "data" / "training" / names[4]).write_bytes(b"not an image")
    return [f"{names[4]}: unreadable or truncated image"]


def _break_no_p2(root, names):
    scipy.io.savemat(root / "labels" / "training" / f"{names[5]}.mat", {"points": np.zeros((68, 2))})
    return [f"{names[5]}.mat: no 'p2' variable"]


def _break_wrong_shape(root, names):
    scipy.io.savemat(root / "labels" / "training" / f"{names[6]}.mat", {"p2": np.zeros((64, 2))})
    return [f"{names[6]}.mat: 'p2' has shape (64, 2), expected (68, 2)"]


def _break_nan(root, names):
    set_point(root, "training", names[7], 5, [np.nan, 10.0])
    return [f"{names[7]}.mat: 'p2' has NaN or infinite coordinates at keypoints [5]"]


def _break_inf(root, names):
    set_point(root, "training", names[8], 66, [10.0, np.inf])
    return [f"{names[8]}.mat: 'p2' has NaN or infinite coordinates at keypoints [66]"]


def _break_too_few_for_validation(root, names):
    return []  # checked with a large val_size below


BREAKERS = [_break_missing_folder, _break_image_without_label, _break_label_without_image, _break_truncated_jpeg,
            _break_not_a_jpeg, _break_no_p2, _break_wrong_shape, _break_nan, _break_inf]


@pytest.mark.parametrize("breaker", BREAKERS, ids=lambda f: f.__name__[7:])
def test_each_bad_input_is_named_and_nothing_is_written(synthetic_tree, tmp_path, breaker):
    root = copy_tree(synthetic_tree, tmp_path / "raw")
    expected = breaker(root, training_names(root))
    target = tmp_path / "out"
    with pytest.raises(AasceDataError) as info:
        preprocess(root, target, SIZE, val_size=3, seed=0, workers=1)
    for message in expected:
        assert any(message in problem for problem in info.value.problems), (message, info.value.problems)
    assert not target.exists()


def test_all_problems_are_collected_in_one_go(synthetic_tree, tmp_path):
    root = copy_tree(synthetic_tree, tmp_path / "raw")
    names = training_names(root)
    expected = [m for breaker in BREAKERS[1:] for m in breaker(root, names)]
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(AasceDataError) as info:
        preprocess(root, target, SIZE, val_size=3, seed=0, workers=2, backend="process")
    assert len(info.value.problems) == len(expected)
    for message in expected:
        assert any(message in problem for problem in info.value.problems), message
    assert leftovers(target) == ["keep.txt"]


def test_val_size_larger_than_the_training_set(synthetic_tree, tmp_path):
    with pytest.raises(AasceDataError, match="12 paired training images, fewer than the 13 requested"):
        preprocess(synthetic_tree, tmp_path / "out", SIZE, val_size=13, seed=0, workers=1)
    assert not (tmp_path / "out").exists()


def test_cli_prints_every_problem_and_exits_non_zero(synthetic_tree, tmp_path, capsys):
    root = copy_tree(synthetic_tree, tmp_path / "raw")
    names = training_names(root)
    expected = _break_truncated_jpeg(root, names) + _break_nan(root, names)
    code = data_preprocessing.main(["--source", str(root), "--target", str(tmp_path / "out"), "--val-size", "3",
                                    "--workers", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "2 problem(s)" in err and "nothing was written" in err
    assert all(message in err for message in expected)
    assert not (tmp_path / "out").exists()


def test_cli_success_and_refusal_to_overwrite(synthetic_tree, tmp_path, capsys):
    args = ["--source", str(synthetic_tree), "--target", str(tmp_path), "--val-size", "2", "--size", "128", "64",
            "--workers", "1", "--no-progress"]
    assert data_preprocessing.main(args) == 0
    assert "train 10, val 2, test 4" in capsys.readouterr().out
    assert data_preprocessing.main(args) == 1
    assert "already exists" in capsys.readouterr().err
    assert data_preprocessing.main(args + ["--overwrite"]) == 0
    assert leftovers(tmp_path) == ["dataset16_128"]


# --------------------------------------------------------------------------------------------------------
# points outside the image
# --------------------------------------------------------------------------------------------------------
def test_out_of_image_training_samples_are_dropped_by_name(synthetic_tree, tmp_path):
    root = copy_tree(synthetic_tree, tmp_path / "raw")
    names = training_names(root)
    with Image.open(root / "data" / "training" / names[4]) as image:
        cols, rows = image.size
    # two samples, the 2nd and the 5th in sorted order: the official loop deleted index 4 after index 1
    # was gone, i.e. the 6th sample instead of the 5th
    set_point(root, "training", names[1], 67, [10.0, 1e5])
    set_point(root, "training", names[4], 0, [cols + 1.0, 10.0])
    set_point(root, "test", sorted((root / "data" / "test").iterdir())[0].name, 3, [-2.0, 5.0])
    report = preprocess(root, tmp_path / "out", SIZE, val_size=0, seed=0, workers=1)
    assert report.counts == {"train": 10, "val": 0, "test": 4}
    assert len(report.dropped) == 2
    assert names[1] in report.dropped[0] and "(10, 100000)" in report.dropped[0]
    assert names[4] in report.dropped[1] and f"0: ({cols + 1}, 10)" in report.dropped[1]
    kept = [e["image"] for e in json.loads((report.output_dir / "train.json").read_text())]
    assert kept == [f"data/training/{n[:-4]}.npy" for i, n in enumerate(names) if i not in (1, 4)]
    assert not (report.output_dir / "data" / "training" / f"{names[1][:-4]}.npy").exists()
    assert any("kept in 'test'" in w for w in report.warnings)  # test labels are never removed
    test_entries = json.loads((report.output_dir / "test.json").read_text())
    assert test_entries[0]["label"][3] == [-2.0, 5.0]


def test_out_of_image_validation_sample_is_dropped_too(synthetic_tree, tmp_path):
    root = copy_tree(synthetic_tree, tmp_path / "raw")
    names = training_names(root)
    _, val = split_training(len(names), 3, seed=0)
    set_point(root, "training", names[val[1]], 10, [5.0, -1.0])
    report = preprocess(root, tmp_path / "out", SIZE, val_size=3, seed=0, workers=1)
    assert report.counts == {"train": 9, "val": 2, "test": 4}
    assert len(report.dropped) == 1 and names[val[1]] in report.dropped[0] and "'val'" in report.dropped[0]


# --------------------------------------------------------------------------------------------------------
# a crash while writing leaves nothing half-written
# --------------------------------------------------------------------------------------------------------
def test_crash_while_writing_leaves_no_output_and_keeps_the_old_one(synthetic_tree, tmp_path, monkeypatch):
    first = preprocess(synthetic_tree, tmp_path, SIZE, val_size=3, seed=0, workers=1)
    before = tree_files(first.output_dir)
    calls = {"n": 0}
    real_save = np.save

    def failing_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk full")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        preprocess(synthetic_tree, tmp_path, SIZE, val_size=3, seed=1, workers=1, overwrite=True)
    assert leftovers(tmp_path) == ["dataset16_512"]
    assert tree_files(first.output_dir) == before


# --------------------------------------------------------------------------------------------------------
# real images
# --------------------------------------------------------------------------------------------------------
OUTSIDE_IMAGE = "sunhl-1th-25-Jul-2016-49 A AP.jpg"  # a point 57 px below its 2325-row image


def test_real_images(tmp_path):
    if not REAL_TREE.is_dir():
        pytest.skip(f"../shared/aasce not present: {REAL_TREE} holds the real AASCE copy used here")
    training = sorted(p.name for p in (REAL_TREE / "data" / "training").iterdir())
    chosen = [n for n in training if "(" in n][:1] + training[:2]  # a name with parentheses, and two more
    chosen += [OUTSIDE_IMAGE] if OUTSIDE_IMAGE in training else training[2:3]
    test_name = sorted(p.name for p in (REAL_TREE / "data" / "test").iterdir())[0]
    root = tmp_path / "raw"
    for split, name in [("training", n) for n in chosen] + [("test", test_name)]:
        for top, suffix in (("data", ""), ("labels", ".mat")):
            (root / top / split).mkdir(parents=True, exist_ok=True)
            shutil.copy(REAL_TREE / top / split / (name + suffix), root / top / split / (name + suffix))
    report = preprocess(root, tmp_path / "out", SIZE, val_size=1, seed=0, workers=1)
    if OUTSIDE_IMAGE in chosen:  # dropped wherever the split put it
        assert len(report.dropped) == 1 and OUTSIDE_IMAGE in report.dropped[0]
    assert sum(report.counts.values()) == 5 - len(report.dropped) and report.counts["test"] == 1
    for split in ("train", "val", "test"):
        for entry in json.loads((report.output_dir / f"{split}.json").read_text()):
            raw = root / entry["image"].replace(".npy", ".jpg")
            p2 = scipy.io.loadmat(root / entry["image"].replace("data/", "labels/").replace(".npy", ".jpg.mat"))["p2"]
            with Image.open(raw) as image:
                gray = np.array(image)
            assert entry["raw_size_row_col"] == list(gray.shape) and entry["label"] == p2.tolist()
            rows, cols = gray.shape
            assert np.array_equal(np.array(entry["points_512"]), p2 * np.array([256 / cols, 512 / rows]))
            array = np.load(report.output_dir / entry["image"])
            assert np.array_equal(array[:, :, 1], cv2.resize(gray, (256, 512), interpolation=cv2.INTER_LINEAR))


def test_load_samples_in_order(synthetic_tree):
    from dataset.aasce_io import find_pairs

    pairs, _, _ = find_pairs(synthetic_tree)
    samples = load_samples(pairs[:3], (32, 16))
    assert [s.pair for s in samples] == pairs[:3]
    assert all(s.problems == [] and s.image_resized.shape == (32, 16) for s in samples)


# --------------------------------------------------------------------------------------------------------
# outputs: stale temporaries, unwritable or full targets (checked before the images are read)
# --------------------------------------------------------------------------------------------------------
def test_temporary_folder_of_a_killed_run_is_removed_and_named(synthetic_tree, tmp_path, caplog):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".dataset16_128.tmp-{int(dead.stdout)}-0a1b2c3d"
    (stale / "data" / "training").mkdir(parents=True)
    (stale / "data" / "training" / "half.npy").write_bytes(b"\x93NUMPY")
    alive = tmp_path / f".dataset16_128.tmp-{os.getppid()}-00000000"  # a running process's: left alone
    alive.mkdir()
    with caplog.at_level("WARNING"):
        preprocess(synthetic_tree, tmp_path, (128, 64), val_size=2, seed=0, workers=1)
    assert leftovers(tmp_path) == sorted([alive.name, "dataset16_128"])
    assert f"removed {stale}, a temporary folder left by an interrupted run" in caplog.text


def test_unwritable_or_full_target_is_refused_before_reading_the_images(synthetic_tree, tmp_path, capsys, monkeypatch):
    import dataset.preprocess as preprocess_module

    a_file = tmp_path / "file"
    a_file.write_text("not a folder")
    read = []
    monkeypatch.setattr(preprocess_module, "load_samples", lambda *a, **k: read.append(1) or [])
    args = ["--source", str(synthetic_tree), "--val-size", "2", "--workers", "1", "--no-progress"]
    assert data_preprocessing.main(args + ["--target", str(a_file / "out")]) == 1
    assert capsys.readouterr().err == f"error: output folder {a_file / 'out'} is not writable ({a_file} is a file)\n"
    import shutil as shutil_module

    monkeypatch.setattr(shutil_module, "disk_usage", lambda path: shutil_module._ntuple_diskusage(10**9, 10**9 - 2**20, 2**20))
    assert data_preprocessing.main(args + ["--target", str(tmp_path / "out")]) == 1
    assert "is (nearly) full: 1.0 MB free" in capsys.readouterr().err
    assert read == [] and leftovers(tmp_path) == ["file"]
