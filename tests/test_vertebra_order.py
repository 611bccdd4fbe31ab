"""Training labels that list the topmost vertebra last (dataset/vertebra_order.py, Dataset.train_vertebra_order)."""
import json

import numpy as np
import pytest

import util
from conftest import AASCE, require
from dataset.aasce_io import read_label
from dataset.keypoint_dataset import KeypointDataset
from misc.errors import BadInput
from dataset.vertebra_order import is_top_to_bottom, topmost_listed_last, unrotate_vertebrae


def _spine(vertebrae=17):
    """(x, y) corners of boxes stacked top to bottom, each corner distinct."""
    pts = []
    for v in range(vertebrae):
        top, bottom = 40 + v * 26, 58 + v * 26
        pts += [[100 + v, top], [150 + v, top + 1], [101 + v, bottom], [151 + v, bottom + 1]]
    return np.array(pts, dtype=float)


def _topmost_listed_last(points):
    """The AASCE quirk: [T2..L5, T1]."""
    return np.roll(points, -4, axis=0)


def test_labels_in_order_come_back_equal():
    spine = _spine()
    assert is_top_to_bottom(spine) and not topmost_listed_last(spine)
    np.testing.assert_array_equal(unrotate_vertebrae(spine), spine)


def test_topmost_vertebra_listed_last_is_moved_to_the_front_with_its_corners_in_place():
    spine = _spine()
    quirky = _topmost_listed_last(spine)
    assert not is_top_to_bottom(quirky) and topmost_listed_last(quirky)
    np.testing.assert_array_equal(unrotate_vertebrae(quirky), spine)


@pytest.mark.parametrize("case", ["last two level", "last in the middle", "first two swapped"])
def test_other_irregular_orders_are_left_as_labelled(case):
    spine = _spine()
    if case == "last two level":  # as in a few real files: "L5" 5 px above L4
        spine[64:68] = spine[60:64] - [0, 5]
    elif case == "last in the middle":
        spine[64:68, 1] = spine[32:36, 1] + 5
    else:
        spine[[0, 1, 2, 3, 4, 5, 6, 7]] = spine[[4, 5, 6, 7, 0, 1, 2, 3]]
    assert not is_top_to_bottom(spine) and not topmost_listed_last(spine)
    np.testing.assert_array_equal(unrotate_vertebrae(spine), spine)


@pytest.mark.parametrize("shape", [(10, 2), (68, 3), (68,)])
def test_points_not_in_groups_of_four_are_refused(shape):
    with pytest.raises(ValueError, match="multiple of 4"):
        unrotate_vertebrae(np.zeros(shape))


def test_real_aasce_labels_with_the_topmost_vertebra_listed_last_are_repaired():
    labels = require(AASCE / "labels" / "training", "the real-label check")
    quirky = read_label(labels / "sunhl-1th-10-Jan-2017-227 C AP.jpg.mat")
    rows = quirky.reshape(17, 4, 2)[:, :, 1].mean(axis=1)
    assert rows[16] < rows[0]  # "L5" is the topmost vertebra in the file
    fixed = unrotate_vertebrae(quirky)
    assert is_top_to_bottom(fixed)
    np.testing.assert_array_equal(fixed, np.roll(quirky, 4, axis=0))
    all_labels = [read_label(path) for path in sorted(labels.glob("*.mat"))]
    repaired = [label for label in all_labels if topmost_listed_last(label)]
    # the counts the README and the schema's help state, and every repaired label ends up in order
    assert (len(all_labels), len(repaired)) == (417, 17)
    assert all(is_top_to_bottom(unrotate_vertebrae(label)) for label in repaired)
    assert sum(not is_top_to_bottom(label) for label in all_labels) == 23


@pytest.fixture()
def quirky_table(tmp_path):
    image = np.full((512, 256, 3), 128, dtype=np.uint8)
    np.save(tmp_path / "img.npy", image)
    points = _topmost_listed_last(_spine())
    entry = {"image": "img.npy", "label": points.tolist(), "raw_size_row_col": [512, 256],
             "pixelSpacing": [1, 1], "points_512": points.tolist()}
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}.json").write_text(json.dumps([entry]))
    return tmp_path


def _config(table_dir, order):
    return util.load_config("config/spineweb_ours.yaml", [
        f"PATH.DATA.TABLE={table_dir}", f"PATH.DATA.IMAGE={table_dir}", "Dataset.aug.type=none",
        f"Dataset.train_vertebra_order={order}"])


@pytest.mark.parametrize("order, split, repaired_expected", [
    ("fix_rotated", "train", True),
    ("fix_rotated", "val", False),   # validation and evaluation see the labels as they are
    ("fix_rotated", "test", False),
    ("as_labelled", "train", False),   # the paper's default
])
def test_only_training_samples_are_reordered_and_only_when_asked(quirky_table, order, split, repaired_expected):
    coords_rc = KeypointDataset(_config(quirky_table, order), split)[0]["coords_rc"].numpy()
    expected_xy = _spine() if repaired_expected else _topmost_listed_last(_spine())
    np.testing.assert_allclose(coords_rc[:, ::-1], expected_xy, atol=1e-3)


def test_the_paper_config_keeps_the_labels_as_they_are():
    assert util.load_config("config/spineweb_ours.yaml").Dataset.train_vertebra_order == "as_labelled"


def test_the_repair_needs_four_points_per_vertebra():
    with pytest.raises(BadInput, match="train_vertebra_order.*num_keypoint is 10"):
        util.load_config("config/spineweb_ours.yaml", ["Dataset.num_keypoint=10",
                                                       "Dataset.train_vertebra_order=fix_rotated"])
