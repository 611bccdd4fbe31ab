"""The synthetic AASCE-like data generator (dataset/synthetic.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from dataset import synthetic
from dataset.aasce_io import find_pairs, read_label_csvs
from dataset.synthetic import (
    IMAGE_COLS_RANGE,
    IMAGE_ROWS_RANGE,
    SpineCurve,
    generate_tree,
    make_sample,
    render_xray,
    sample_curve,
    sample_image_size,
    spine_corners,
)
from misc.cobb import cobb_angles
from conftest import SHARED

REAL_TREE = SHARED / "aasce" / "boostnet_labeldata"


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def geometry(index: int, seed: int = 0):
    """Image size, curve and corners of one sample, as make_sample draws them (no rendering)."""
    rng = np.random.default_rng([seed, 1, index])
    synthetic.sample_name(rng, seed, "training", index)
    rows, cols = sample_image_size(rng)
    curve, pts, cols = synthetic._fit_spine(rng, rows, cols, 1.0)
    return rows, cols, curve, np.round(pts)


# --------------------------------------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------------------------------------
def test_a_sample_is_a_pure_function_of_seed_split_and_index():
    a, b = make_sample(3, "test", 7, scale=0.3), make_sample(3, "test", 7, scale=0.3)
    assert a.name == b.name and np.array_equal(a.image, b.image) and np.array_equal(a.points_xy, b.points_xy)
    c = make_sample(3, "test", 8, scale=0.3)
    assert c.name != a.name and not np.array_equal(c.points_xy, a.points_xy)


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    generate_tree(tmp_path / "one", num_train=3, num_test=1, seed=11, scale=0.25, workers=1)
    generate_tree(tmp_path / "two", num_train=3, num_test=1, seed=11, scale=0.25, workers=2)
    assert files(tmp_path / "one") == files(tmp_path / "two")
    generate_tree(tmp_path / "three", num_train=3, num_test=1, seed=12, scale=0.25, workers=1)
    assert files(tmp_path / "three").keys() != files(tmp_path / "one").keys()


def test_refuses_to_mix_with_an_existing_tree(tmp_path):
    generate_tree(tmp_path, num_train=1, num_test=1, scale=0.2)
    with pytest.raises(FileExistsError, match="--overwrite"):
        generate_tree(tmp_path, num_train=1, num_test=1, scale=0.2)
    names = generate_tree(tmp_path, num_train=2, num_test=0, scale=0.2, seed=4, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "data" / "training").iterdir()) == names["training"]
    assert list((tmp_path / "data" / "test").iterdir()) == []


# --------------------------------------------------------------------------------------------------------
# formats: as the real files
# --------------------------------------------------------------------------------------------------------
def test_tree_layout_and_file_formats(synthetic_tree):
    pairs, problems, notes = find_pairs(synthetic_tree)
    assert problems == [] and notes == [] and len(pairs) == 16
    for split in ("training", "test"):
        label_dir = synthetic_tree / "labels" / split
        names, landmarks, angles = read_label_csvs(label_dir)
        assert names == sorted(p.name for p in (synthetic_tree / "data" / split).iterdir())
        assert landmarks.shape == (len(names), 136) and angles.shape == (len(names), 3)
        for csv in ("filenames.csv", "landmarks.csv", "angles.csv"):
            raw = (label_dir / csv).read_bytes()
            assert raw.endswith(b"\r\n") and raw.count(b"\r\n") == len(names) and b"\n\n" not in raw
        for row, name in enumerate(names):
            mat = scipy.io.loadmat(label_dir / f"{name}.mat")
            assert [k for k in mat if not k.startswith("__")] == ["p2"]
            p2 = mat["p2"]
            assert p2.shape == (68, 2) and p2.dtype == np.uint16  # like the real label files
            with Image.open(synthetic_tree / "data" / split / name) as image:
                assert image.format == "JPEG" and image.mode == "L"
                assert list(image.quantization[0])[:4] == [8, 6, 5, 8]  # IJG quality 75, as the real JPEGs
                cols, rows = image.size
            # x / width first, then y / height, printed with 5 significant digits (values below 1)
            assert np.abs(landmarks[row, :68] - p2[:, 0] / cols).max() <= 5.01e-6
            assert np.abs(landmarks[row, 68:] - p2[:, 1] / rows).max() <= 5.01e-6
            expected = cobb_angles(p2.astype(np.float64), rows)["angles"]
            assert np.allclose(angles[row], expected, rtol=1e-4, atol=1e-3)


def test_names_look_like_the_real_ones(synthetic_tree):
    names = sorted(p.name for p in (synthetic_tree / "data").rglob("*.jpg"))
    assert all(" " in n and n.endswith(".jpg") for n in names)
    many = [make_sample(0, "training", i, scale=0.05).name for i in range(40)]
    assert any("(2)" in n for n in many) and any(" ap" in n for n in many) and any(" AP" in n for n in many)


def test_csv_layout_matches_the_real_files(synthetic_tree):
    if not REAL_TREE.is_dir():
        pytest.skip(f"../shared/aasce not present: {REAL_TREE} holds the real CSV files compared with")
    for csv in ("filenames.csv", "landmarks.csv", "angles.csv"):
        real = (REAL_TREE / "labels" / "test" / csv).read_bytes().split(b"\r\n")[0]
        ours = (synthetic_tree / "labels" / "test" / csv).read_bytes().split(b"\r\n")[0]
        assert real.count(b",") == ours.count(b",")
        assert real[:1].isdigit() == ours[:1].isdigit()  # no header in either


# --------------------------------------------------------------------------------------------------------
# plausibility
# --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def many_spines():
    return [geometry(i) for i in range(120)]


def test_points_inside_ordered_top_to_bottom_left_before_right(many_spines):
    for rows, cols, _, pts in many_spines:
        assert IMAGE_ROWS_RANGE[0] <= rows <= IMAGE_ROWS_RANGE[1]
        assert IMAGE_COLS_RANGE[0] <= cols <= IMAGE_COLS_RANGE[1] + 1
        assert pts.min() >= 0 and pts[:, 0].max() <= cols - 1 and pts[:, 1].max() <= rows - 1
        quads = pts.reshape(17, 4, 2)
        top_mid = quads[:, :2].mean(axis=1)
        bottom_mid = quads[:, 2:].mean(axis=1)
        assert np.all(bottom_mid[:, 1] > top_mid[:, 1])  # each vertebra: lower endplate below the upper
        assert np.all(top_mid[1:, 1] > bottom_mid[:-1, 1])  # T1 .. L5 from top to bottom, discs between
        assert np.all(quads[:, 0, 0] < quads[:, 1, 0]) and np.all(quads[:, 2, 0] < quads[:, 3, 0])
        assert np.all(quads[:, 0, 1] < quads[:, 2, 1]) and np.all(quads[:, 1, 1] < quads[:, 3, 1])


def test_sizes_and_placement_like_the_real_data(many_spines):
    rows = np.array([g[0] for g in many_spines])
    cols = np.array([g[1] for g in many_spines])
    assert 2000 < np.median(rows) < 2700 and 700 < np.median(cols) < 1050
    assert rows.min() < 1800 and rows.max() > 2800  # a spread, as the real sizes
    top = np.array([g[3][:2, 1].mean() / g[0] for g in many_spines])
    bottom = np.array([g[3][66:, 1].mean() / g[0] for g in many_spines])
    assert np.all((top > 0.005) & (top < 0.1)) and np.all((bottom > 0.85) & (bottom < 0.98))
    widths = np.array([np.linalg.norm(g[3][1] - g[3][0]) for g in many_spines])
    l5_widths = np.array([np.linalg.norm(g[3][65] - g[3][64]) for g in many_spines])
    assert np.median(l5_widths / widths) > 1.3  # vertebrae grow from T1 to L5


def test_cobb_angles_spread_over_c_and_s_curves(many_spines):
    angles = np.array([cobb_angles(g[3], g[0])["angles"] for g in many_spines])
    kinds = {g[2].kind for g in many_spines}
    assert kinds == {"straight", "C", "S", "triple"}
    assert np.all(angles[:, 0] < 90)
    assert np.mean(angles[:, 0] < 15) > 0.05 and np.mean(angles[:, 0] > 40) > 0.15
    assert 20 < np.median(angles[:, 0]) < 45
    s_shaped = [cobb_angles(g[3], g[0])["s_shaped"] for g in many_spines]
    assert 0.2 < np.mean(s_shaped) < 0.95


def test_curve_tilt_is_smooth_and_hits_its_nodes():
    curve = SpineCurve("C", np.array([0.0, 0.3, 0.8, 1.0]), np.array([5.0, 20.0, -15.0, -5.0]))
    assert np.allclose(curve.tilt_deg(curve.node_t), curve.node_tilt_deg)
    t = np.linspace(0, 1, 1001)
    assert np.abs(np.diff(curve.tilt_deg(t))).max() < 0.2  # no jumps: at most ~35 deg * pi/2 / 0.5 per unit
    rng = np.random.default_rng(0)
    for _ in range(20):
        c = sample_curve(rng)
        assert np.all(np.diff(c.node_t) > 0) and c.node_t[0] == 0 and c.node_t[-1] == 1


def test_vertebrae_are_drawn_at_their_labels():
    """Vertebral bodies are brighter than the discs between them and than the soft tissue beside them."""
    rng = np.random.default_rng(5)
    rows, cols = 1600, 600
    pts = np.round(spine_corners(rng, rows, cols, SpineCurve("straight", np.array([0.0, 1.0]), np.zeros(2))))
    contrasts = []
    for seed in range(4):
        image = render_xray(np.random.default_rng(seed), rows, cols, pts).astype(np.float64)
        quads = pts.reshape(17, 4, 2)
        centres = quads.mean(axis=1)
        width = np.linalg.norm(quads[:, 1] - quads[:, 0], axis=1)
        discs = (quads[:-1, 2:].mean(axis=1) + quads[1:, :2].mean(axis=1)) / 2
        beside = centres + np.stack([1.2 * width, np.zeros(17)], axis=1)

        def at(points):
            return np.array([image[int(y) - 2:int(y) + 3, int(x) - 2:int(x) + 3].mean() for x, y in points])

        body = at(centres)
        contrasts.append(((body[:-1] + body[1:]) / 2 - at(discs)).mean())
        assert (body[12:] > at(beside)[12:]).mean() >= 0.8  # lumbar bodies stand out from the abdomen
    assert min(contrasts) > 3


def test_rendered_image_size_and_type():
    sample = make_sample(0, "training", 0, scale=0.3)
    assert sample.image.dtype == np.uint8 and sample.image.ndim == 2
    assert sample.image.std() > 10  # not blank


def test_cli(tmp_path, capsys):
    out = tmp_path / "synth"
    png = tmp_path / "sample.png"
    args = ["--out", str(out), "--num-train", "2", "--num-test", "1", "--scale", "0.2", "--workers", "1"]
    assert synthetic.main(args + ["--sample-png", str(png)]) == 0
    assert "wrote 2 training + 1 test images" in capsys.readouterr().out
    assert png.exists() and len(list((out / "labels" / "training").glob("*.mat"))) == 2
    assert synthetic.main(args) == 1 and "already exists" in capsys.readouterr().err
