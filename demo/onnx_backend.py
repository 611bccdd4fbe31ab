"""The network on ONNX Runtime instead of PyTorch, for faster refinements on CPU.

    predictor = KeypointPredictor.from_checkpoint(path)
    use_onnx_runtime(predictor, threads=1)     # predictor.net now runs on ONNX Runtime

The network (BatchNorm already folded by ``prepare_for_inference``) is exported once, in memory, with
the main-logits path of ``predict`` only; ``OnnxNetwork.predict`` has the same signature and returns a
torch tensor, so ``KeypointPredictor`` and its ``model.predictor.Predictor`` (click maps,
previous-heatmap rule, decoding) are unchanged. At
start the two are compared on one input with and one without clicks: the probabilities must agree
within ``TOLERANCE`` or the backend is refused (``OnnxBackendError``) and PyTorch stays.

Measured with bench/bench_demo.py --backend onnx (see the README): about 1.3-1.5x faster than PyTorch
with one thread on this CPU, and unlike PyTorch it can use every core without slow outliers under load
(``demo.predictor.default_threads``).
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import torch

__all__ = ["OnnxNetwork", "OnnxBackendError", "use_onnx_runtime", "onnx_runtime_available", "TOLERANCE"]

TOLERANCE = 1e-4  # largest accepted |probability difference| from PyTorch
OPSET = 17


class OnnxBackendError(RuntimeError):
    """ONNX Runtime cannot stand in for the PyTorch network; the message says why."""


def onnx_runtime_available() -> bool:
    try:
        import onnx  # noqa: F401 - the exporter needs it
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class _MainLogits(torch.nn.Module):
    """What is exported: ``net.predict`` with all three inputs present (zeros = no previous heatmap)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, image, click_maps, prev_probs):
        return self.net.predict(image, click_maps, prev_probs)


class OnnxNetwork:
    """``predict(image, click_maps, prev_probs=None) -> logits`` like the network, on ONNX Runtime."""

    def __init__(self, net: torch.nn.Module, size_rc: tuple[int, int], num_keypoints: int, threads: int = 1):
        import onnxruntime as ort

        rows, cols = size_rc
        example = (torch.zeros(1, 3, rows, cols), torch.zeros(1, num_keypoints, rows, cols),
                   torch.zeros(1, num_keypoints, rows, cols))
        buffer = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's notes on tracing are about other models
            torch.onnx.export(_MainLogits(net).eval(), example, buffer, input_names=["image", "click_maps", "prev"],
                              output_names=["logits"], opset_version=OPSET, dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Waiting pool threads sleep instead of spinning: with every core busy (a training beside the
        # tool) spinning 2 threads gave a median of 0.184 s, sleeping ones 0.179 s, and 1 thread 0.169 s.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        self.num_keypoints = num_keypoints

    def eval(self) -> "OnnxNetwork":
        return self

    def predict(self, image: torch.Tensor, click_maps: torch.Tensor,
                prev_probs: torch.Tensor | None = None) -> torch.Tensor:
        if prev_probs is None:
            prev_probs = torch.zeros_like(click_maps)
        feeds = {"image": _array(image), "click_maps": _array(click_maps), "prev": _array(prev_probs)}
        return torch.from_numpy(self._session.run(None, feeds)[0])


    def __call__(self, image: torch.Tensor, click_maps: torch.Tensor, prev_probs: torch.Tensor | None = None,
                 with_aux: bool = False) -> tuple[torch.Tensor]:
        """The network's call signature, as ``model.predictor.Predictor`` uses it (main logits only)."""
        if with_aux:
            raise ValueError("the ONNX Runtime network computes the main logits only")
        return (self.predict(image, click_maps, prev_probs),)


def _array(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().float().numpy())


def use_onnx_runtime(predictor, threads: int = 1) -> float:
    """Switch ``predictor`` to ONNX Runtime after checking it against PyTorch; returns the largest
    probability difference seen. Raises OnnxBackendError (predictor unchanged) when it differs more."""
    if not onnx_runtime_available():
        raise OnnxBackendError("onnx and onnxruntime are not installed (pip install -r requirements.txt)")
    rows, cols = predictor.size_rc
    torch_net = predictor.net
    try:
        onnx_net = OnnxNetwork(torch_net, predictor.size_rc, predictor.num_keypoints, threads)
    except Exception as exc:  # noqa: BLE001 - any exporter/runtime failure means: stay on PyTorch
        raise OnnxBackendError(f"the network could not be exported to ONNX ({type(exc).__name__}: {exc})") from None
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, rows, cols, generator=generator) * 2 - 1
    worst = 0.0
    with torch.inference_mode():
        first = torch.sigmoid(torch_net.predict(image, torch.zeros(1, predictor.num_keypoints, rows, cols), None))
        click_rc, mask = predictor.clicks({0: (rows / 3, cols / 2), 30: (rows / 2, cols / 3)})
        maps = predictor.core.click_maps(click_rc, mask)
        prev = first * mask[..., None, None]
        for args in ((image, torch.zeros_like(maps), None), (image, maps, prev)):
            expected = torch.sigmoid(torch_net.predict(*args))
            worst = max(worst, float((torch.sigmoid(onnx_net.predict(*args)) - expected).abs().max()))
    if not worst <= TOLERANCE:
        raise OnnxBackendError(f"ONNX Runtime differs from PyTorch by {worst:.2e} in probability (more than "
                               f"{TOLERANCE:g}); staying on PyTorch")
    predictor.core.net = onnx_net  # the shared Predictor makes every network call
    return worst
