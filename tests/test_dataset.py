"""The torch Dataset, augmentation and collate function on a small realistic table."""
import json

import numpy as np
import pytest
import torch

import util
from dataset.augment import flip_swap_permutation
from dataset.keypoint_dataset import KeypointDataset, collate, read_table
from misc.errors import BadInput

K = 68


def _spine_points(rows=512, cols=256):
    """Corners of 17 boxes stacked top to bottom, left corners left of right ones: (x, y)."""
    pts = []
    for v in range(17):
        top, bottom = 40 + v * 26, 40 + v * 26 + 18
        left, right = 100 + v, 150 + v
        pts += [[left, top], [right, top], [left, bottom], [right, bottom]]
    return np.array(pts, dtype=float)


@pytest.fixture()
def table_dir(tmp_path):
    rng = np.random.default_rng(0)
    entries = []
    for i in range(3):
        img = rng.integers(0, 255, size=(512, 256, 3), dtype=np.uint8)
        rel = f"data/training/img {i} (x).npy"
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / rel, img)
        pts = _spine_points()
        entries.append({"image": rel, "label": (pts * [4, 4]).tolist(), "raw_size_row_col": [2048, 1024],
                        "pixelSpacing": [1, 1], "points_512": pts.tolist()})
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}.json").write_text(json.dumps(entries))
    return tmp_path


def _config(table_dir, *overrides):
    return util.load_config("config/spineweb_ours.yaml", [
        f"PATH.DATA.TABLE={table_dir}", f"PATH.DATA.IMAGE={table_dir}", *overrides])


def test_flip_swap_permutation_swaps_left_and_right_corners():
    perm = flip_swap_permutation(8)
    assert perm.tolist() == [1, 0, 3, 2, 5, 4, 7, 6]
    with pytest.raises(ValueError, match="4 corners"):
        flip_swap_permutation(6)


def test_eval_sample_is_unchanged_and_in_range(table_dir):
    ds = KeypointDataset(_config(table_dir), "val")
    item = ds[0]
    assert item["image"].shape == (3, 512, 256)
    assert -1.0 <= item["image"].min() and item["image"].max() <= 1.0
    expected = torch.tensor(_spine_points()[:, ::-1].copy(), dtype=torch.float32)
    torch.testing.assert_close(item["coords_rc"], expected, atol=1e-3, rtol=0)
    assert item["clicks"].size == 0 and bool(item["morph_mask"])


@pytest.mark.parametrize("swap", [True, False])
def test_flip_keeps_left_labels_on_the_left_only_with_the_fix(table_dir, swap):
    cfg = _config(table_dir, "Dataset.aug.rotate_p=0", "Dataset.aug.scale_p=0", "Dataset.aug.flip_p=1",
                  f"Dataset.aug.swap_lr_on_flip={str(swap).lower()}")
    item = KeypointDataset(cfg, "train")[0]
    cols = item["coords_rc"][:, 1].reshape(17, 4)
    left_is_left = bool((cols[:, 0] < cols[:, 1]).all() and (cols[:, 2] < cols[:, 3]).all())
    assert left_is_left == swap
    # mirrored around the vertical axis: x' = W - 1 - x (albumentations convention)
    orig_x = _spine_points()[:, 0]
    mirrored = 255 - orig_x
    if swap:
        mirrored = mirrored[flip_swap_permutation(K)]
    torch.testing.assert_close(item["coords_rc"][:, 1], torch.tensor(mirrored, dtype=torch.float32), atol=1e-3, rtol=0)
    assert not bool(item["morph_mask"])  # geometry was augmented: no morphology loss (official rule)


def test_training_randomness_repeats_for_same_epoch_and_changes_across_epochs(table_dir):
    ds = KeypointDataset(_config(table_dir), "train")
    a, b = ds[1], ds[1]
    assert torch.equal(a["image"], b["image"]) and np.array_equal(a["clicks"], b["clicks"])
    draws = []
    for epoch in range(6):
        ds.set_epoch(epoch)
        draws.append((ds[1]["coords_rc"].sum().item(), tuple(ds[1]["clicks"])))
    assert len(set(draws)) > 1


def test_resize_to_a_smaller_network_input(table_dir):
    ds = KeypointDataset(_config(table_dir, "Dataset.image_size=[256,128]"), "test")
    item = ds[0]
    assert item["image"].shape == (3, 256, 128)
    torch.testing.assert_close(item["coords_rc"], torch.tensor(_spine_points()[:, ::-1] / 2, dtype=torch.float32),
                               atol=1e-3, rtol=0)


def test_collate_keeps_click_lists_and_raw_sizes(table_dir):
    ds = KeypointDataset(_config(table_dir), "train")
    batch = collate([ds[0], ds[1], ds[2]])
    assert batch["image"].shape == (3, 3, 512, 256) and batch["coords_rc"].shape == (3, K, 2)
    assert len(batch["clicks"]) == 3 and batch["raw_size_rc"][0].tolist() == [2048.0, 1024.0]
    assert batch["spacing_rc"].shape == (3, 2) and batch["morph_mask"].dtype == torch.bool


def test_missing_table_names_the_file(tmp_path):
    with pytest.raises(BadInput, match="train.json. not found"):
        read_table(tmp_path, "train")


def test_occlusion_hides_one_full_width_band_and_leaves_points_and_other_draws_alone(table_dir):
    plain = KeypointDataset(_config(table_dir), "train")
    occluded = KeypointDataset(_config(table_dir, "Dataset.aug.occlusion_p=1.0",
                                       "Dataset.aug.occlusion_height=[0.2,0.2]"), "train")
    a, b = plain[1], occluded[1]
    # switching occlusion on changes no other random draw: same geometry, same clicks
    assert torch.equal(a["coords_rc"], b["coords_rc"]) and np.array_equal(a["clicks"], b["clicks"])
    changed_rows = torch.nonzero((a["image"] != b["image"]).any(dim=0).any(dim=1)).flatten()
    assert len(changed_rows) > 0
    top, bottom = int(changed_rows.min()), int(changed_rows.max())
    assert bottom - top + 1 <= round(0.2 * 512)  # one contiguous band of the drawn height at most
    for channel in b["image"][:, top:top + round(0.2 * 512)]:
        assert torch.all(channel == channel[0, 0])  # flat over all columns: nothing to see under it
    assert KeypointDataset(_config(table_dir, "Dataset.aug.occlusion_p=1.0"), "val")[1]["image"].equal(
        KeypointDataset(_config(table_dir), "val")[1]["image"])  # never at evaluation


def test_an_epoch_set_without_occlusion_shows_the_whole_image_and_keeps_the_other_draws(table_dir):
    plain = KeypointDataset(_config(table_dir), "train")
    occluded = KeypointDataset(_config(table_dir, "Dataset.aug.occlusion_p=1.0"), "train")
    plain.set_epoch(3)
    occluded.set_epoch(3, occlusion=False)  # a localisation epoch of the trainer
    a, b = plain[1], occluded[1]
    assert torch.equal(a["image"], b["image"]) and np.array_equal(a["clicks"], b["clicks"])
    occluded.set_epoch(4)  # the next epoch hides its band again
    plain.set_epoch(4)
    assert not torch.equal(plain[1]["image"], occluded[1]["image"])


def test_occlude_band_fills_with_the_image_mean():
    from dataset.augment import occlude_band
    image = np.zeros((100, 40, 3), dtype=np.uint8)
    image[:50] = 200
    out = occlude_band(image, np.random.default_rng(3), (0.3, 0.3))
    rows = np.nonzero((out != image).any(axis=(1, 2)))[0]
    assert 1 <= len(rows) <= 30 and np.all(out[rows.min():rows.min() + 30] == 100)
    assert np.array_equal(np.delete(out, range(rows.min(), rows.min() + 30), axis=0),
                          np.delete(image, range(rows.min(), rows.min() + 30), axis=0))
