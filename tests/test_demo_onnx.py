"""The ONNX Runtime backend of the annotation tool gives the PyTorch network's outputs (within 1e-4 in
probability) for the committed model on a synthetic X-ray, with and without clicks, and is refused when
it does not."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from demo import DEFAULT_CHECKPOINT
from demo.onnx_backend import OnnxBackendError, onnx_runtime_available, use_onnx_runtime
from demo.predictor import KeypointPredictor

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not onnx_runtime_available(), reason="onnx/onnxruntime not installed "
                                                                        "(they are in requirements.txt)")


@pytest.fixture(scope="module")
def predictors(tmp_path_factory):
    """(PyTorch predictor, ONNX Runtime predictor) of the committed model, else of a tiny random one."""
    path = REPO / DEFAULT_CHECKPOINT
    if not path.is_file():
        from tests.test_demo_api import tiny_checkpoint

        path = tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pth")
    reference = KeypointPredictor.from_checkpoint(path)
    onnx = KeypointPredictor.from_checkpoint(path)
    use_onnx_runtime(onnx, threads=1)
    return reference, onnx


def test_onnx_runtime_matches_pytorch_with_and_without_clicks(predictors):
    from dataset.synthetic import make_sample

    reference, onnx = predictors
    assert not isinstance(onnx.net, torch.nn.Module) and isinstance(reference.net, torch.nn.Module)
    sample = make_sample(0, "test", 2)
    image = reference.network_image(sample.image)
    rows, cols = reference.size_rc
    height, width = sample.image.shape
    first_ref, first_onnx = reference.predict(image, {}, None), onnx.predict(image, {}, None)
    assert float((first_ref.probs - first_onnx.probs).abs().max()) <= 1e-4
    true_xy = sample.points_xy.astype(np.float64)
    fixed_rc = {i: (true_xy[i, 1] * rows / height, true_xy[i, 0] * cols / width) for i in (3, 26, 50)}
    second_ref = reference.predict(image, fixed_rc, first_ref.probs)
    second_onnx = onnx.predict(image, fixed_rc, first_ref.probs)
    assert float((second_ref.probs - second_onnx.probs).abs().max()) <= 1e-4
    # the decoded points follow from the probabilities: the same to well under a grid pixel
    assert float((second_ref.points_rc - second_onnx.points_rc).abs().max()) < 0.05


def test_a_backend_that_differs_is_refused_and_pytorch_stays(predictors, monkeypatch):
    import demo.onnx_backend

    reference = predictors[0]
    net = reference.net
    monkeypatch.setattr(demo.onnx_backend, "TOLERANCE", 0.0)  # any float difference now counts as a mismatch
    with pytest.raises(OnnxBackendError, match="differs from PyTorch"):
        use_onnx_runtime(reference, threads=1)
    assert reference.net is net


def test_runtime_threads_sleep_when_waiting_so_all_cores_can_be_used(predictors):
    """demo.py gives ONNX Runtime every core (demo.predictor.default_threads); that is only safe beside
    other work because the pool's waiting threads sleep instead of spinning."""
    from demo.predictor import default_threads

    options = predictors[1].net._session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 1
    assert default_threads("onnx") >= default_threads("torch") >= 1
