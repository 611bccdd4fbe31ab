"""PNG strips of the revisions (engine/visualize.py): layout, colours that carry meaning, files on disk."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.visualize import Panel, render_strip, strip_panels, write_strips

IMAGE_RC = (512, 256)  # the preprocessed array shown in the strips
GRID_RC = (256, 128)  # the network grid of the arrays (half the displayed size)
RAW_RC = (2048.0, 1024.0)


def make_spine_xy(image_rc=IMAGE_RC, tilt_deg=8.0):
    """(68, 2) (x, y) in the displayed image: 17 boxes down the middle, tilts alternating by +-tilt_deg."""
    rows, cols = image_rc
    pts = np.zeros((68, 2))
    w, h = 0.22 * cols, 0.018 * rows
    for v in range(17):
        t = np.radians(tilt_deg * np.sin(np.pi * v / 8))
        rotation = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        centre = np.array([cols / 2 + 0.08 * cols * np.sin(np.pi * v / 16), rows * (0.08 + 0.05 * v)])
        corners = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [-w / 2, h / 2], [w / 2, h / 2]])
        pts[4 * v: 4 * v + 4] = centre + corners @ rotation.T
    return pts


def make_image(image_rc=IMAGE_RC):
    """A dark X-ray-like uint8 (H, W, 3): grey background, a brighter vertical band for the spine."""
    rows, cols = image_rc
    image = np.full((rows, cols, 3), 70, dtype=np.uint8)
    image[:, cols // 3: 2 * cols // 3] = 120
    return image


def runs(mask_1d, min_length):
    """Number of runs of True at least min_length long."""
    count, length = 0, 0
    for value in list(mask_1d) + [False]:
        if value:
            length += 1
        else:
            count += length >= min_length
            length = 0
    return count


def panel_grid(picture):
    """(rows, columns) of image panels: runs of non-white pixels across the middle of the panels."""
    not_white = (picture < 245).any(axis=-1)
    col_profile = not_white.sum(axis=1)  # per picture row: how many non-white pixels
    panel_rows = runs(col_profile > 0.5 * picture.shape[1] * 0.6, 100)
    band = np.flatnonzero(col_profile > 0.5 * picture.shape[1] * 0.6)
    middle_row = band[len(band) // 4]  # a picture row inside the first row of panels
    panel_cols = runs(not_white[middle_row], 100)
    return panel_rows, panel_cols


def colour_pixels(picture, colour):
    r, g, b = (picture[..., i].astype(int) for i in range(3))
    tests = {
        "red": (r > 200) & (g < 90) & (b < 90),
        "green": (g > 180) & (r < 110) & (b < 110),
        "yellow": (r > 200) & (g > 200) & (b < 90),
        "cyan": (r < 90) & (g > 180) & (b > 200),
    }
    return int(tests[colour].sum())


def make_arrays(n_images=2, max_clicks=5):
    """An ``evaluate``-style arrays dict on a 256x128 grid: predictions a few pixels off, clicks fix points."""
    true_rc = make_spine_xy(GRID_RC)[:, ::-1]
    rng = np.random.default_rng(0)
    arrays = {"true_rc": np.stack([true_rc] * n_images), "image_size_rc": np.array(GRID_RC),
              "raw_size_rc": np.tile(RAW_RC, (n_images, 1)), "spacing_rc": np.ones((n_images, 2)),
              "names": np.array([f"data/test/patient ({i}) A AP.npy" for i in range(n_images)])}
    for revision in ("model", "manual"):
        order = np.stack([rng.permutation(68)[:max_clicks] for _ in range(n_images)])
        pred = true_rc + rng.normal(0, 1.5, size=(n_images, max_clicks + 1, 68, 2))
        for n in range(1, max_clicks + 1):
            for i in range(n_images):
                pred[i, n, order[i, :n]] = true_rc[order[i, :n]]
        arrays[f"{revision}_sargmax_rc"] = pred
        arrays[f"{revision}_hargmax_rc"] = np.round(pred)
        arrays[f"{revision}_clicks"] = order
    return arrays


# --------------------------------------------------------------------------------------------------------
def test_render_strip_lays_out_the_panels_and_draws_truth_prediction_clicks_and_cobb_lines():
    true_xy = make_spine_xy()
    pred_xy = true_xy + np.array([4.0, -3.0])
    panels = [Panel("truth"), Panel("model, 0 clicks", pred_xy), ("model, 2 clicks", pred_xy, [5, 40])]
    picture = render_strip(make_image(), true_xy, panels, raw_size_rc=RAW_RC, panel_width_px=200, dpi=100)
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    assert picture.shape[1] == pytest.approx(3 * 200 + 2 * 6 + 10, abs=3)  # three 200 px panels
    assert panel_grid(picture) == (1, 3)
    assert colour_pixels(picture, "red") > 300  # predicted outlines and points
    assert colour_pixels(picture, "green") > 300  # truth
    assert colour_pixels(picture, "yellow") > 20  # two clicked stars
    assert colour_pixels(picture, "cyan") > 50  # Cobb angle 1 lines


def test_render_strip_without_clicks_draws_no_click_marks_and_wraps_rows():
    true_xy = make_spine_xy()
    panels = [Panel("a", true_xy), Panel("b", true_xy), Panel("c", true_xy), Panel("X-ray", show_truth=False)]
    picture = render_strip(make_image()[..., 0], true_xy, panels, ncols=2, panel_width_px=160)
    assert panel_grid(picture) == (2, 2)
    panels_only = picture[: -70]  # without the legend (whose star is yellow)
    assert colour_pixels(panels_only, "yellow") == 0


def test_a_degenerate_prediction_is_drawn_not_raised():
    true_xy = make_spine_xy()
    broken = true_xy.copy()
    broken[12:16] = broken[12:16].mean(axis=0)  # vertebra 3 collapsed: no direction, no Cobb line for it
    picture = render_strip(make_image(), true_xy, [Panel("broken", broken, [0])], panel_width_px=128)
    assert panel_grid(picture) == (1, 1)


def test_render_strip_rejects_bad_inputs():
    true_xy = make_spine_xy()
    with pytest.raises(ValueError, match="uint8"):
        render_strip(make_image().astype(np.float32), true_xy, [Panel("a", true_xy)])
    with pytest.raises(ValueError, match="pred_xy of panel 'a'"):
        render_strip(make_image(), true_xy, [Panel("a", true_xy[:10])])
    with pytest.raises(ValueError, match="clicked indices"):
        render_strip(make_image(), true_xy, [Panel("a", true_xy, [68])])


def test_strip_panels_rescale_grid_coordinates_and_take_the_clicks_made_so_far():
    arrays = make_arrays(n_images=1, max_clicks=3)
    display_rc = 2 * np.asarray(arrays["image_size_rc"])
    panels = strip_panels(arrays, 0, display_rc, (0, 3))
    assert [p.title for p in panels] == ["truth", "model revision, 0 clicks", "model revision, 3 clicks",
                                         "X-ray", "manual revision, 0 clicks", "manual revision, 3 clicks"]
    assert panels[2].pred_xy == pytest.approx(2.0 * arrays["model_sargmax_rc"][0, 3][:, ::-1])
    assert list(panels[2].clicked) == arrays["model_clicks"][0, :3].tolist()
    assert list(panels[4].clicked) == []


def test_write_strips_writes_one_two_row_png_per_image(tmp_path):
    arrays = make_arrays(n_images=3, max_clicks=5)
    image_dir = tmp_path / "dataset"
    for name in arrays["names"]:
        (image_dir / name).parent.mkdir(parents=True, exist_ok=True)
        np.save(image_dir / name, make_image())
    out_dir = tmp_path / "visual"
    paths = write_strips(arrays, image_dir, 2, out_dir)  # an int: the first 2 images
    assert [p.name for p in paths] == ["0000_patient_0_A_AP.png", "0001_patient_1_A_AP.png"]
    assert sorted(p.name for p in out_dir.iterdir()) == [p.name for p in paths]  # no temporary files
    with Image.open(paths[0]) as png:
        picture = np.asarray(png.convert("RGB"))
    assert panel_grid(picture) == (2, 5)  # truth/X-ray + 0, 1, 3, 5 clicks, model row and manual row
    assert colour_pixels(picture, "yellow") > 40 and colour_pixels(picture, "red") > 1000


def test_write_strips_accepts_a_dataset_or_a_loader_and_shows_only_evaluated_clicks(tmp_path):
    arrays = make_arrays(n_images=2, max_clicks=1)

    class Dataset:  # like KeypointDataset: only its image_dir is used
        image_dir = tmp_path / "data"

    for name in arrays["names"]:
        (Dataset.image_dir / name).parent.mkdir(parents=True, exist_ok=True)
        np.save(Dataset.image_dir / name, make_image())
    [path] = write_strips(arrays, Dataset(), [1], tmp_path / "a")
    with Image.open(path) as png:
        assert panel_grid(np.asarray(png.convert("RGB"))) == (2, 3)  # clicks 3 and 5 were not evaluated
    [path] = write_strips(arrays, lambda name: make_image()[..., 0], [0], tmp_path / "b", clicks=(1,))
    with Image.open(path) as png:
        assert panel_grid(np.asarray(png.convert("RGB"))) == (2, 2)
    with pytest.raises(IndexError, match="out of range"):
        write_strips(arrays, Dataset(), [2], tmp_path / "c")
    with pytest.raises(ValueError, match="none of the clicks"):
        write_strips(arrays, Dataset(), [0], tmp_path / "c", clicks=(3, 5))
