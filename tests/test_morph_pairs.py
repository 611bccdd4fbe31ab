"""Morphology pairs/triplets (dataset/morph_pairs.py, select_morph_pairs.py): selection, loading, the CLI."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from dataset.morph_pairs import (
    candidate_pairs,
    candidate_triplets,
    count_recovered,
    load_morph_pairs,
    pair_length_variance,
    read_label_folder,
    select_morph_pairs,
    to_frame,
    triplet_angle_variance,
    validate_morph_pairs,
    write_morph_pairs,
)
from conftest import SHARED

REFERENCE_JSON = SHARED / "reference" / "morph_pairs_aasce.json"
TRAINING_LABELS = SHARED / "aasce" / "boostnet_labeldata" / "labels" / "training"
SHIPPED_JSON = Path(__file__).resolve().parents[1] / "dataset" / "morph_pairs_dataset16.json"


def planted_labels(size_rc=(100, 100), num_sets=40, num_keypoints=9, seed=0):
    """Random points on images of ``size_rc`` pixels, except that points 2 and 6 are always 10 pixels apart
    (a stable pair) and the angle at point 4 from 4->1 to 4->7 is always 50 degrees (a stable triplet).
    Lengths and angles stay constant in a frame only when it scales both axes alike."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform(0, 1, size=(num_sets, num_keypoints, 2)) * [size_rc[1], size_rc[0]]
    turn = rng.uniform(0, 2 * math.pi, num_sets)
    pts[:, 6] = pts[:, 2] + 10 * np.stack([np.cos(turn), np.sin(turn)], axis=1)
    for n in range(num_sets):
        r1, r7 = rng.uniform(5, 40, 2)
        a = rng.uniform(0, 2 * math.pi)
        pts[n, 1] = pts[n, 4] + r1 * np.array([math.cos(a), math.sin(a)])
        pts[n, 7] = pts[n, 4] + r7 * np.array([math.cos(a + math.radians(50)), math.sin(a + math.radians(50))])
    return pts, np.tile(np.asarray(size_rc, dtype=float), (num_sets, 1))


# ---------------------------------------------------------------------------------------------- candidates
def test_candidates_are_all_pairs_and_all_triplets_with_a_vertex():
    pairs, triplets = candidate_pairs(68), candidate_triplets(68)
    assert pairs.shape == (2278, 2) and triplets.shape == (68 * 2211, 3)
    assert (pairs[:, 0] < pairs[:, 1]).all()
    assert (triplets[:, 0] < triplets[:, 2]).all()
    assert ((triplets[:, 1] != triplets[:, 0]) & (triplets[:, 1] != triplets[:, 2])).all()
    assert len({tuple(t) for t in triplets.tolist()}) == len(triplets)
    assert candidate_triplets(4).tolist()[:4] == [[1, 0, 2], [1, 0, 3], [2, 0, 3], [0, 1, 2]]  # by vertex, then (x, z)


# ---------------------------------------------------------------------------------------------- statistics
def test_pair_length_variance_on_hand_numbers():
    coords = np.array([[[0, 0], [3, 4], [0, 1]], [[0, 0], [6, 8], [0, 1]]], dtype=float)  # lengths 5 and 10
    np.testing.assert_allclose(pair_length_variance(coords, [[0, 1], [0, 2]]), [6.25, 0.0])


def test_angle_variance_has_no_jump_at_180_degrees():
    # angle at the vertex alternates between +179 and -179 degrees: 2 degrees apart, not 358
    coords = []
    for sign in (1, -1) * 5:
        z = [math.cos(math.radians(sign * 179)), math.sin(math.radians(sign * 179))]
        coords.append([[1.0, 0.0], [0.0, 0.0], z])
    variance = triplet_angle_variance(np.array(coords), [[0, 1, 2]])[0]
    assert variance == pytest.approx(math.radians(1) ** 2, rel=1e-6)


def test_angle_variance_of_coincident_points_is_finite():
    coords = np.zeros((5, 3, 2))
    assert np.isfinite(triplet_angle_variance(coords, [[0, 1, 2]])).all()


def test_frames():
    pts = np.array([[[50.0, 100.0]]])  # x = 50, y = 100 on an image of 200 rows x 100 cols
    np.testing.assert_allclose(to_frame(pts, [[200, 100]], frame="normalised"), [[[0.5, 0.5]]])
    np.testing.assert_allclose(to_frame(pts, [[200, 100]], frame="grid", grid_size_rc=(512, 256)), [[[128, 256]]])
    with pytest.raises(ValueError, match="frame"):
        to_frame(pts, [[200, 100]], frame="pixels")
    with pytest.raises(ValueError, match="sizes_rc"):
        to_frame(pts, [[0, 100]])


# ---------------------------------------------------------------------------------------------- selection
# "normalised" divides by the image size: square images keep the planted angle; "grid" rescales them to
# 512 x 256: images of 200 rows x 100 cols keep it.
@pytest.mark.parametrize("frame, size_rc", [("grid", (200, 100)), ("normalised", (100, 100))])
def test_selection_finds_the_planted_stable_pair_and_triplet(frame, size_rc):
    pts, sizes = planted_labels(size_rc)
    pairs, triplets = select_morph_pairs(pts, sizes, num_pairs=3, num_triplets=3, frame=frame)
    assert pairs.shape == (3, 2) and triplets.shape == (3, 3)
    assert pairs[0].tolist() == [2, 6]
    assert triplets[0].tolist() == [1, 4, 7]


def test_selection_is_deterministic_and_validates():
    pts, sizes = planted_labels()
    first = select_morph_pairs(pts, sizes, num_pairs=5, num_triplets=5)
    second = select_morph_pairs(pts, sizes, num_pairs=5, num_triplets=5)
    assert all((a == b).all() for a, b in zip(first, second))
    with pytest.raises(ValueError, match="cannot select 100 pairs"):
        select_morph_pairs(pts, sizes, num_pairs=100, num_triplets=1)
    bad = pts.copy()
    bad[3, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"label sets \[3\]"):
        select_morph_pairs(bad, sizes)
    with pytest.raises(ValueError, match="N >= 2"):
        select_morph_pairs(pts[:1], sizes[:1])


def test_count_recovered_ignores_order_within_entries():
    assert count_recovered([[1, 2], [3, 4]], [[2, 1], [4, 5]]) == 1
    assert count_recovered([[1, 5, 2]], [[2, 5, 1], [1, 2, 5]]) == 1


# ---------------------------------------------------------------------------------------------- loading
def test_official_list_loads_as_70_pairs_and_70_triplets():
    pairs, triplets = load_morph_pairs("dataset16")
    assert pairs.shape == (70, 2) and triplets.shape == (70, 3)
    assert pairs.dtype == np.int64 and triplets.dtype == np.int64
    assert pairs[0].tolist() == [2, 4] and triplets[0].tolist() == [2, 63, 4]
    # the official structure: vertex in a lower vertebra, outer points neighbours on an upper one
    assert set(triplets[:, 1].tolist()) <= set(range(44, 66))
    assert (triplets[:, 2] - triplets[:, 0] == 2).all()


def test_official_list_equals_the_reference_file():
    if not REFERENCE_JSON.is_file():
        pytest.skip(f"../shared/reference not present: the comparison needs {REFERENCE_JSON}")
    reference = json.loads(REFERENCE_JSON.read_text())
    assert json.loads(SHIPPED_JSON.read_text()) == reference
    assert [a.tolist() for a in load_morph_pairs("dataset16")] == reference
    assert [a.tolist() for a in load_morph_pairs(REFERENCE_JSON)] == reference


def test_loader_reads_a_path_and_validates(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps([[[0, 1], [2, 3]], [[0, 1, 2]]]))
    pairs, triplets = load_morph_pairs(path, num_keypoints=4)
    assert pairs.tolist() == [[0, 1], [2, 3]] and triplets.tolist() == [[0, 1, 2]]
    assert [a.tolist() for a in load_morph_pairs(str(path), num_keypoints=4)] == [pairs.tolist(), triplets.tolist()]

    with pytest.raises(ValueError, match="index 3 is out of range for 3 keypoints"):
        load_morph_pairs(path, num_keypoints=3)
    with pytest.raises(ValueError, match="out of range for 60 keypoints"):
        load_morph_pairs("dataset16", num_keypoints=60)
    with pytest.raises(FileNotFoundError, match="dataset16"):
        load_morph_pairs("dataset99")

    cases = {
        "arity": ([[[0, 1, 2]], [[0, 1, 2]]], r"pairs\[0\].*exactly 2"),
        "triplet arity": ([[[0, 1]], [[0, 1]]], r"triplets\[0\].*exactly 3"),
        "integers": ([[[0, 1.5]], [[0, 1, 2]]], "integers"),
        "distinct": ([[[1, 1]], [[0, 1, 2]]], "different keypoints"),
        "negative": ([[[0, -1]], [[0, 1, 2]]], "out of range"),
        "empty": ([[], [[0, 1, 2]]], "non-empty"),
        "format": ({"pairs": []}, r"\[pairs, triplets\]"),
        "three lists": ([[[0, 1]], [[0, 1, 2]], []], r"\[pairs, triplets\]"),
    }
    for name, (content, message) in cases.items():
        bad = tmp_path / f"{name}.json"
        bad.write_text(json.dumps(content))
        with pytest.raises(ValueError, match=message):
            load_morph_pairs(bad, num_keypoints=4)
    broken = tmp_path / "broken.json"
    broken.write_text("[[[0, 1]")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_morph_pairs(broken)


def test_validate_accepts_numpy_arrays():
    pairs, triplets = validate_morph_pairs(np.array([[0, 1]]), np.array([[0, 1, 2]]), 3)
    assert pairs.tolist() == [[0, 1]] and triplets.tolist() == [[0, 1, 2]]
    with pytest.raises(ValueError, match="integers"):
        validate_morph_pairs(np.array([[0.0, 1.0]]), np.array([[0, 1, 2]]), 3)


def test_write_then_load_round_trip(tmp_path):
    pairs, triplets = load_morph_pairs("dataset16")
    out = write_morph_pairs(tmp_path / "sub" / "pairs.json", pairs, triplets)
    assert [a.tolist() for a in load_morph_pairs(out)] == [pairs.tolist(), triplets.tolist()]
    assert [p.name for p in out.parent.iterdir()] == ["pairs.json"]  # no temporary file left
    with pytest.raises(ValueError, match="out of range"):
        write_morph_pairs(tmp_path / "bad.json", [[0, 99]], [[0, 1, 2]])
    assert not (tmp_path / "bad.json").exists()


# ---------------------------------------------------------------------------------------------- the CLI
def _write_label_folder(root: Path, num_images=5, seed=1):
    """A tiny labels/training + data/training tree in the AASCE formats (no images: landmarks.csv sizes)."""
    import scipy.io

    rng = np.random.default_rng(seed)
    folder = root / "labels" / "training"
    folder.mkdir(parents=True)
    names, landmark_rows, sizes = [], [], []
    for n in range(num_images):
        rows, cols = 1000 + 100 * n, 500 + 10 * n
        pts = np.round(rng.uniform(0.1, 0.9, size=(68, 2)) * [cols, rows])
        name = f"img {n} (A AP).jpg"
        scipy.io.savemat(str(folder / f"{name}.mat"), {"p2": pts.astype(np.uint16)})
        names.append(name)
        landmark_rows.append(np.concatenate([pts[:, 0] / cols, pts[:, 1] / rows]))
        sizes.append((rows, cols))
    (folder / "filenames.csv").write_text("\n".join(names) + "\n")
    np.savetxt(folder / "landmarks.csv", np.array(landmark_rows), delimiter=",", fmt="%.5g")
    return folder, np.array(sizes, dtype=float)


def test_label_folder_reader_recovers_image_sizes(tmp_path):
    folder, sizes = _write_label_folder(tmp_path)
    points, sizes_rc, names = read_label_folder(folder)
    assert points.shape == (5, 68, 2) and points.dtype == np.float64
    np.testing.assert_array_equal(sizes_rc, sizes)
    assert names[0] == "img 0 (A AP).jpg"


def test_cli_on_a_label_folder_and_on_a_table(tmp_path, capsys):
    import select_morph_pairs as cli

    folder, sizes = _write_label_folder(tmp_path)
    out = tmp_path / "ours.json"
    assert cli.main(["--labels", str(folder), "--out", str(out), "--num-pairs", "10", "--num-triplets", "12",
                     "--grid-size", "512", "256", "--compare", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "of 70 entries of 'dataset16' recovered" in printed
    pairs, triplets = load_morph_pairs(out)
    assert pairs.shape == (10, 2) and triplets.shape == (12, 3)

    # the same labels as a preprocessed table give the same selection, from the raw labels and sizes or,
    # without them, from the resized points (points_512 on the 512 x 256 grid)
    points, sizes_rc, names = read_label_folder(folder)
    grid = points / sizes_rc[:, None, ::-1] * [256, 512]
    full = [{"image": n, "label": p.tolist(), "raw_size_row_col": s.tolist(), "points_512": g.tolist()}
            for n, p, s, g in zip(names, points, sizes_rc, grid)]
    resized_only = [{"image": n, "points_512": g.tolist()} for n, g in zip(names, grid)]
    for number, table in enumerate((full, resized_only)):
        table_path = tmp_path / f"table{number}.json"
        table_path.write_text(json.dumps(table))
        out_table = tmp_path / f"from_table{number}.json"
        assert cli.main(["--labels", str(table_path), "--out", str(out_table), "--num-pairs", "10",
                         "--num-triplets", "12", "--grid-size", "512", "256", "--no-progress"]) == 0
        assert [a.tolist() for a in load_morph_pairs(out_table)] == [pairs.tolist(), triplets.tolist()]
    capsys.readouterr()
    assert cli.main(["--labels", str(tmp_path / "table1.json"), "--grid-size", "1024", "512", "--no-progress"]) == 2
    assert capsys.readouterr().err == (f"error: --labels {tmp_path / 'table1.json'}: 'points_512' does not belong to a "
                                       f"grid of 1024 rows: pass the grid size the table was made with\n")


# ---------------------------------------------------------------------------------------------- real data
def test_real_training_labels_recover_the_official_list():
    if not TRAINING_LABELS.is_dir():
        pytest.skip(f"../shared/aasce not present: the recovery check needs {TRAINING_LABELS}")
    points, sizes_rc, _ = read_label_folder(TRAINING_LABELS)
    assert points.shape == (417, 68, 2)
    pairs, triplets = select_morph_pairs(points, sizes_rc)  # defaults: 70 + 70, the 512 x 256 grid
    official_pairs, official_triplets = load_morph_pairs("dataset16")
    assert count_recovered(pairs, official_pairs) == 66
    assert count_recovered(triplets, official_triplets) == 63
