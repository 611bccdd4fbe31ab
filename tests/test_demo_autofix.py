"""The error detector in the annotation tool (demo.detector, demo.session, demo.server): every new set of
points carries the detector's scores, "Check first" follows them, and Auto-fix is one undoable action
whose moved points are suggestions (predicted, not fixed); without a detector the tool works as before
and Auto-fix is refused with a message.

A tiny random network and a detector with random weights stand in for the trained ones: the contract
(scores are the detector's, the ranking follows them, the history and version rules hold) does not
depend on the weights.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from demo.detector import PointChecker
from demo.predictor import KeypointPredictor
from demo.server import DemoApp, create_server
from demo.session import AnnotationSession, NoDetector
from demo.store import STORE_NAME, AnnotationStore
from demo.worklist import Worklist
from dataset.synthetic import make_sample
from misc.errors import BadInput
from misc.frames import original_xy_to_grid_rc
from tests.test_demo_api import call, encode, post_json, tiny_checkpoint, upload

K = 68


def detector_checkpoint(path, size_rc, seed: int = 0):
    """An error detector with random weights in the checkpoint format of model/error_detector.py, its
    corrector's shape model fitted on a few synthetic spines (grid (row, col) frame, as AutoReviser uses
    it), flagging 4 points a round."""
    from misc.shape_model import fit_shape_model
    from model.error_detector import shape_model_to_entries
    from model.error_detector import ErrorDetector, detector_checkpoint_bytes

    torch.manual_seed(seed)
    detector = ErrorDetector(size_rc, width=8, token=16)
    shapes = []
    for index in range(6):
        sample = make_sample(seed, "training", index, scale=0.25)
        rows, cols = sample.image.shape
        shapes.append(original_xy_to_grid_rc(sample.points_xy.astype(np.float64), size_rc, (rows, cols))[:, ::-1])
    shape_model = fit_shape_model(np.stack(shapes), 3)
    path.write_bytes(detector_checkpoint_bytes(detector, shape_model_to_entries(shape_model),
                                              {"num_flagged": 4, "ridge": 1.0}))
    return path


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return KeypointPredictor.from_checkpoint(tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pth"))


@pytest.fixture(scope="module")
def detector_path(tmp_path_factory, predictor):
    return detector_checkpoint(tmp_path_factory.mktemp("detector") / "error_detector.pth", predictor.size_rc)


@pytest.fixture(scope="module")
def checker(predictor, detector_path):
    return PointChecker.from_checkpoint(detector_path, predictor)


@pytest.fixture(scope="module")
def xray():
    sample = make_sample(0, "test", 2, scale=0.4)
    return sample.image


def independent_scores(detector_path, session: AnnotationSession, points_xy) -> np.ndarray:
    """The detector's scores of ``points_xy`` computed here from the checkpoint, not by the tool."""
    from model.error_detector import load_detector_checkpoint

    detector, _, _ = load_detector_checkpoint(detector_path)
    size_rc = session.predictor.size_rc
    rows, cols = size_rc
    image = session.predictor.network_image(session.gray)
    points_rc = original_xy_to_grid_rc(np.asarray(points_xy), size_rc, (session.height, session.width))
    with torch.no_grad():
        return detector(image, torch.as_tensor(points_rc, dtype=torch.float32)[None])[0].double().numpy()


# --------------------------------------------------------------------------------------------------
# the session, without HTTP
# --------------------------------------------------------------------------------------------------
def test_every_prediction_carries_the_detectors_scores_of_its_points(predictor, checker, detector_path, xray):
    session = AnnotationSession("s", "x.jpg", xray, predictor, checker=checker)
    first = session.current
    np.testing.assert_allclose(first.error_scores, independent_scores(detector_path, session, first.points_xy),
                               rtol=1e-5, atol=1e-5)
    refined = session.refine({10: (30.0, 40.0)})
    np.testing.assert_allclose(refined.error_scores, independent_scores(detector_path, session, refined.points_xy),
                               rtol=1e-5, atol=1e-5)
    assert session.undo().error_scores is first.error_scores  # kept with the state, not recomputed
    ranked = first.most_suspect()
    free_scores = [first.error_scores[i] for i in range(K)]
    assert ranked == sorted(range(K), key=lambda i: -free_scores[i])[:5]


def test_without_a_detector_nothing_changes_and_auto_fix_is_refused(predictor, xray):
    session = AnnotationSession("s", "x.jpg", xray, predictor)
    assert session.error_scores(session.current) is None
    with pytest.raises(NoDetector, match="--detector"):
        session.auto_fix()
    assert len(session.history) == 1


def test_auto_fix_moves_flagged_points_as_suggestions_and_undo_gives_them_back(predictor, checker, xray):
    session = AnnotationSession("s", "x.jpg", xray, predictor, checker=checker)
    before = session.refine({5: (40.0, 50.0), 30: (60.0, 120.0)})
    fixed = session.auto_fix()
    assert fixed.action == "autofix" and fixed.fixed_xy == before.fixed_xy
    assert len(fixed.suggested) == 4 and not set(fixed.suggested) & set(fixed.fixed_xy)  # num_flagged: 4
    assert tuple(fixed.points_xy[5]) == (40.0, 50.0) and tuple(fixed.points_xy[30]) == (60.0, 120.0)
    assert not np.array_equal(fixed.points_xy, before.points_xy)
    assert fixed.error_scores is not None and not np.array_equal(fixed.error_scores, before.error_scores)
    undone = session.undo()
    assert np.array_equal(undone.points_xy, before.points_xy) and undone.fixed_xy == before.fixed_xy
    assert undone.suggested == ()
    redone = session.redo()
    assert redone.suggested == fixed.suggested and np.array_equal(redone.points_xy, fixed.points_xy)
    accepted = session.accept([fixed.suggested[0]])  # an accepted suggestion is fixed, no longer suggested
    assert accepted.suggested == fixed.suggested[1:]
    assert session.refine(dict(accepted.fixed_xy)).suggested == ()  # a new prediction replaces suggestions


def test_a_bad_detector_file_is_refused_with_one_line_naming_it(predictor, tmp_path):
    with pytest.raises(BadInput, match="missing.pth.*not found"):
        PointChecker.from_checkpoint(tmp_path / "missing.pth", predictor)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(BadInput, match="junk.pth.*cannot be read"):
        PointChecker.from_checkpoint(junk, predictor)
    other = detector_checkpoint(tmp_path / "other_grid.pth", (64, 32))
    with pytest.raises(BadInput, match="other_grid.pth.*does not fit the model"):
        PointChecker.from_checkpoint(other, predictor)


def test_demo_command_line_names_a_missing_detector_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "demo.py", "--detector", str(tmp_path / "nope.pth"), "--port", "0"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope.pth" in lines[0] and lines[0].startswith("error:"), done.stderr


# --------------------------------------------------------------------------------------------------
# the HTTP API
# --------------------------------------------------------------------------------------------------
def serve(app):
    server = create_server(app, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def server(predictor, checker):
    srv = serve(DemoApp(predictor, checker=checker))
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def plain_server(predictor):
    srv = serve(DemoApp(predictor))
    yield srv
    srv.shutdown()
    srv.server_close()


def test_state_carries_scores_and_check_first_follows_them(server, xray):
    status, _, info = call(server, "GET", "/api/info")
    assert status == 200 and info["detector"].endswith("error_detector.pth")
    status, _, state = upload(server, encode(xray))
    assert status == 200, state
    scores = np.array(state["error_scores"])
    assert scores.shape == (K,) and state["check_first_by"] == "detector"
    assert state["check_first"] == np.argsort(-scores, kind="stable")[:5].tolist()
    status, _, refined = post_json(server, "/api/refine", {"session": state["session"], "version": state["version"],
                                                           "fixed": {str(state["check_first"][0]): [20.0, 30.0]}})
    assert status == 200, refined
    scores = np.array(refined["error_scores"])
    free = [i for i in np.argsort(-scores, kind="stable").tolist() if str(i) not in refined["fixed"]]
    assert refined["check_first"] == free[:5] and state["check_first"][0] not in refined["check_first"]
    assert refined["suggested"] == []


def test_without_detector_check_first_is_by_confidence_and_auto_fix_is_400(plain_server, xray):
    status, _, info = call(plain_server, "GET", "/api/info")
    assert info["detector"] is None
    status, _, state = upload(plain_server, encode(xray))
    assert state["error_scores"] is None and state["check_first_by"] == "confidence"
    assert state["check_first"] == state["least_confident"]
    status, _, answer = post_json(plain_server, "/api/autofix", {"session": state["session"], "version": state["version"]})
    assert status == 400 and "error detector" in answer["error"] and "--detector" in answer["error"]
    _, _, after = call(plain_server, "GET", f"/api/state?session={state['session']}")
    assert after["version"] == state["version"] and after["points"] == state["points"]


def test_auto_fix_is_an_undoable_edit_with_versions_like_the_others(server, xray):
    _, _, state = upload(server, encode(xray))
    sid = state["session"]
    _, _, before = post_json(server, "/api/refine", {"session": sid, "version": state["version"],
                                                     "fixed": {"0": [12.5, 20.0], "40": [50.0, 100.0]}})
    status, _, fixed = post_json(server, "/api/autofix", {"session": sid, "version": before["version"]})
    assert status == 200, fixed
    assert fixed["action"] == "autofix" and fixed["fixed"] == before["fixed"] and fixed["can_undo"]
    assert len(fixed["suggested"]) == 4 and not {str(i) for i in fixed["suggested"]} & set(fixed["fixed"])
    assert fixed["points"] != before["points"] and fixed["version"] == before["version"] + 1
    # a stale version: 409 with the current state, nothing changed
    status, _, stale = post_json(server, "/api/autofix", {"session": sid, "version": before["version"]})
    assert status == 409 and stale["conflict"] and stale["points"] == fixed["points"]
    status, _, undone = post_json(server, "/api/undo", {"session": sid, "version": fixed["version"]})
    assert status == 200 and undone["points"] == before["points"] and undone["fixed"] == before["fixed"]
    assert undone["error_scores"] == before["error_scores"] and undone["suggested"] == []


def test_auto_fix_suggestions_are_saved_and_reopen_after_a_restart(predictor, checker, xray, tmp_path):
    import cv2

    images = tmp_path / "xrays"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), xray)
    store = AnnotationStore(images / STORE_NAME)
    srv = serve(DemoApp(predictor, worklist=Worklist(images), store=store, checker=checker))
    try:
        opened = post_json(srv, "/api/open", {"name": "a.png"})[2]
        fixed = post_json(srv, "/api/autofix", {"session": opened["session"], "version": opened["version"]})[2]
        assert fixed["suggested"]
    finally:
        srv.shutdown()
        srv.server_close()
        store.close()
    store = AnnotationStore(images / STORE_NAME)
    srv = serve(DemoApp(predictor, worklist=Worklist(images), store=store, checker=checker))
    try:
        again = post_json(srv, "/api/open", {"name": "a.png"})[2]
        assert again["points"] == fixed["points"] and again["suggested"] == fixed["suggested"]
        assert again["action"] == "autofix" and again["check_first_by"] == "detector"
        np.testing.assert_allclose(again["error_scores"], fixed["error_scores"], atol=2e-4)
        undone = post_json(srv, "/api/undo", {"session": again["session"], "version": again["version"]})[2]
        assert undone["points"] == opened["points"] and undone["suggested"] == []
    finally:
        srv.shutdown()
        srv.server_close()
        store.close()
    assert json.loads(json.dumps(again))  # plain JSON
