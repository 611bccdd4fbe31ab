"""The demo's refinement is the evaluation protocol's model revision: same clicks, same points.

Only public APIs: the demo's KeypointPredictor (and its annotation session) against
engine.revision.run_revisions driven by model.predictor.Predictor, both built from one checkpoint file.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dataset.synthetic import make_sample
from demo.predictor import KeypointPredictor
from misc.frames import grid_rc_to_original_xy, grid_to_original, original_xy_to_grid_rc
from engine.revision import choice_clicker, run_revisions
from model.predictor import Predictor

TINY = ["Dataset.image_size=[128,64]", "Dataset.heatmap_std=1.875", "Dataset.subpixel_decoding_patch_size=5",
        "Model.width=8", "Model.ocr_width=16", "Model.small=true"]
CLICKS = 4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from model import build_model, save_checkpoint
    from util import load_config

    config = load_config("config/quick.yaml", TINY + ["Model.prev_heatmap=clicked_at_test"])
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("core") / "tiny.pth"
    save_checkpoint(path, build_model(config), epoch=0, config=config)
    return path


@pytest.fixture(scope="module")
def xray():
    sample = make_sample(0, "test", 1, scale=0.4)
    return sample.image, sample.points_xy.astype(np.float64)


@pytest.fixture(scope="module")
def protocol(checkpoint, xray):
    """The protocol's model revision with the truth of the X-ray: (image tensor, truth grid, trace)."""
    gray, true_xy = xray
    demo = KeypointPredictor.from_checkpoint(checkpoint, fast=False)
    image_t = demo.network_image(gray)
    predictor = Predictor.from_checkpoint(checkpoint)
    true_rc = torch.from_numpy(original_xy_to_grid_rc(true_xy, predictor.size_rc, gray.shape)).float()[None]
    clicker, kind = choice_clicker(true_rc, "hargmax_pixel_MRE", predictor.size_rc, None)
    with torch.inference_mode():
        model, _ = run_revisions(predictor.bind(image_t, true_rc), predictor.decode, clicker, CLICKS, kind)
    return image_t, true_rc, model


def test_demo_predictions_with_the_protocols_clicks_give_its_points(checkpoint, protocol):
    image_t, true_rc, model = protocol
    demo = KeypointPredictor.from_checkpoint(checkpoint, fast=False)
    expected = model.stacked("sargmax")[0]  # (CLICKS + 1, K, 2), clicked points at the truth
    order = model.clicks()[0].tolist()
    last = demo.predict(image_t, {}, None)
    torch.testing.assert_close(last.points_rc, expected[0])
    for n in range(1, CLICKS + 1):
        fixed = {k: tuple(true_rc[0, k].tolist()) for k in order[:n]}
        last = demo.predict(image_t, fixed, last.probs)
        points = last.points_rc.clone()
        points[order[:n]] = true_rc[0, order[:n]]  # the demo shows fixed points where they were put
        torch.testing.assert_close(points, expected[n])
    assert (expected[CLICKS] - expected[0]).abs().max() > 0.5  # the clicks did move points


def test_annotation_session_refinement_in_original_pixels_is_the_protocols(checkpoint, protocol, xray):
    """Through the session: clicks given as original (x, y) pixels; the previous heatmap is kept in
    float16 there, so points agree to a small fraction of a pixel rather than bit for bit."""
    from demo.session import AnnotationSession

    gray, true_xy = xray
    image_t, true_rc, model = protocol
    demo = KeypointPredictor.from_checkpoint(checkpoint, fast=False)
    session = AnnotationSession("s", "x.png", gray, demo)
    raw_rc = torch.tensor([gray.shape], dtype=torch.float64)
    expected_xy = grid_to_original(model.stacked("sargmax").double(), demo.size_rc, raw_rc)[0].numpy()[..., ::-1]
    np.testing.assert_allclose(session.current.points_xy, expected_xy[0], atol=1e-3)
    order = model.clicks()[0].tolist()
    for n in range(1, CLICKS + 1):
        state = session.refine({k: tuple(true_xy[k]) for k in order[:n]})
        np.testing.assert_allclose(state.points_xy, expected_xy[n], atol=0.05)
        np.testing.assert_array_equal(state.points_xy[order[:n]], true_xy[order[:n]])
    np.testing.assert_allclose(grid_rc_to_original_xy(true_rc[0].numpy(), demo.size_rc, gray.shape), true_xy, atol=1e-3)


def test_a_network_given_directly_predicts_like_the_checkpoint(checkpoint, protocol):
    """KeypointPredictor(net, config), the older constructor, wraps the same Predictor."""
    from model import read_checkpoint

    image_t, _, model = protocol
    config = read_checkpoint(checkpoint).config()
    wrapped = KeypointPredictor(Predictor.from_checkpoint(checkpoint).net, config)
    torch.testing.assert_close(wrapped.predict(image_t, {}, None).points_rc, model.stacked("sargmax")[0, 0])
