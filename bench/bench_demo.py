"""Latency of one refinement in the annotation tool, on CPU, for a real-size synthetic X-ray. Target:
at most 150 ms median from mouse release to redrawn points on the 2-core machine when it is
otherwise idle; the load average is printed with the numbers, since other jobs change them several-fold.

Measures, per refinement (a different point fixed each time, all earlier ones kept, as a person works):
  model_s     the network call alone (KeypointPredictor.predict: click maps, forward, decoding)
  session_s   AnnotationSession.refine (adds the grid conversions and the history bookkeeping)
  save_s      saving the session's history after the refinement (demo.store, SQLite on a temporary folder:
              what every edit of a folder opened with --images adds)
  http_s      POST /api/refine over loopback, JSON encoded and decoded (everything but the browser)
  score_s     with an error detector (--detector): its scores of each refinement's points (part of session_s
              and http_s: every new prediction is scored when it is made)
  autofix_s   with an error detector: one Auto-fix round (AnnotationSession.auto_fix: scores, corrector,
              one more network call, and the scores of the new points)
The browser adds its own share (pointer event, fetch, SVG update, next frame); tests/test_demo_browser.py
measures the whole path in headless Chromium and prints it.

    python bench/bench_demo.py                       # the committed model, else the quick config's
    python bench/bench_demo.py --checkpoint save/quick/best.pth --runs 30 --output /tmp/bench_demo.json
    python bench/bench_demo.py --backend torch       # PyTorch (default: as demo.py, ONNX Runtime if installed)
    python bench/bench_demo.py --compare-backends    # PyTorch and ONNX Runtime alternately, same load
    python bench/bench_demo.py --detector random     # with an error detector of random weights (same cost)

Latency does not depend on the weight values: without a checkpoint the quick config's architecture
(config/quick.yaml) runs with random weights.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from demo import DEFAULT_CHECKPOINT as DEFAULT_CHECKPOINT_NAME  # noqa: E402
from demo import DEFAULT_DETECTOR as DEFAULT_DETECTOR_NAME  # noqa: E402
from demo.predictor import KeypointPredictor, default_threads  # noqa: E402
from demo.server import DemoApp, create_server  # noqa: E402
from demo.session import AnnotationSession  # noqa: E402
from demo.store import STORE_NAME, AnnotationStore  # noqa: E402

DEFAULT_CHECKPOINT = ROOT / DEFAULT_CHECKPOINT_NAME
TARGET_MEDIAN_S = 0.150


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", default="", help=f"model file (default {DEFAULT_CHECKPOINT.relative_to(ROOT)} "
                                                          "when present, else random weights)")
    parser.add_argument("--config", default=str(ROOT / "config" / "quick.yaml"),
                        help="architecture for random weights (or for a checkpoint without a stored config)")
    parser.add_argument("--runs", type=int, default=20, help="refinements timed per measure")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for the network (0 = as demo.py: ONNX Runtime all cores, PyTorch all "
                             "cores but one)")
    parser.add_argument("--example", type=int, default=0, help="synthetic test image index (seed 0)")
    parser.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto",
                        help="the network on PyTorch or on ONNX Runtime (demo.onnx_backend); auto = as demo.py, "
                             "ONNX Runtime when installed")
    parser.add_argument("--compare-backends", action="store_true",
                        help="instead: time PyTorch and ONNX Runtime predictions alternately, call by call, so "
                             "that both see the same load")
    parser.add_argument("--detector", default="",
                        help="error detector: a checkpoint, 'random' (the default architecture with random weights: "
                             "the cost does not depend on them) or 'none'; default: as demo.py, "
                             f"{DEFAULT_DETECTOR_NAME} when present, else none")
    parser.add_argument("--output", default="", help="also write the JSON to this file")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.threads < 0:
        parser.error("--runs must be >= 1 and --threads >= 0")
    if args.backend == "auto":
        from demo.onnx_backend import onnx_runtime_available

        args.backend = "onnx" if onnx_runtime_available() else "torch"
    return args


def threads_for(backend: str, args) -> int:
    """The network's CPU threads on ``backend``: --threads, else what demo.py takes."""
    return args.threads or default_threads(backend)


def load(args) -> KeypointPredictor:
    from util import load_config

    config = load_config(args.config)
    path = Path(args.checkpoint) if args.checkpoint else (DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.is_file() else None)
    if path is None:
        return KeypointPredictor.untrained_from_config(config)
    return KeypointPredictor.from_checkpoint(path, config)


def load_checker(args, predictor: KeypointPredictor):
    """The error detector as demo.py loads it (demo.detector.PointChecker), or None."""
    from demo.detector import PointChecker

    choice = args.detector or (str(ROOT / DEFAULT_DETECTOR_NAME) if (ROOT / DEFAULT_DETECTOR_NAME).is_file() else "none")
    if choice == "none":
        return None
    if choice != "random":
        return PointChecker.from_checkpoint(choice, predictor)
    from dataset.synthetic import make_sample
    from misc.frames import original_xy_to_grid_rc
    from misc.shape_model import fit_shape_model
    from model.auto_revision import AutoReviser, ShapeCorrector
    from model.error_detector import ErrorDetector

    torch.manual_seed(0)
    shapes = []
    for index in range(8):
        sample = make_sample(1, "training", index, scale=0.25)
        shapes.append(original_xy_to_grid_rc(sample.points_xy.astype(float), predictor.size_rc,
                                             sample.image.shape)[:, ::-1])
    reviser = AutoReviser(predictor.core, ErrorDetector(predictor.size_rc, predictor.num_keypoints).scorer(),
                          ShapeCorrector(fit_shape_model(np.stack(shapes), 4)))
    return PointChecker(reviser, predictor, "random weights (default architecture)")


def fixed_sequence(true_xy, runs: int) -> list[dict[int, tuple[float, float]]]:
    """Growing sets of fixed points: run n fixes the n-th point of a fixed order (then starts again)."""
    order = [26, 40, 3, 60, 12, 50, 33, 7, 66, 20, 45, 1, 55, 30, 10, 64, 37, 22, 48, 5]
    out, fixed = [], {}
    for n in range(runs):
        index = order[n % len(order)]
        if n and n % len(order) == 0:
            fixed = {}
        fixed = {**fixed, index: (float(true_xy[index, 0]) + 3.25, float(true_xy[index, 1]) - 2.5)}
        out.append(dict(fixed))
    return out


def summary(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    return {"median_s": statistics.median(ordered), "p90_s": ordered[int(0.9 * (len(ordered) - 1))],
            "max_s": ordered[-1], "min_s": ordered[0]}


def compare_backends(args, sample) -> dict:
    """Alternate PyTorch and ONNX Runtime predictions of the same growing click sets (KeypointPredictor
    .predict on the network grid); medians are comparable because each pair ran under the same load."""
    from demo.onnx_backend import use_onnx_runtime

    reference, onnx = load(args), load(args)
    use_onnx_runtime(onnx, threads=threads_for("onnx", args))
    reference.warm_up()
    onnx.warm_up()
    image = reference.network_image(sample.image)
    first = reference.predict(image, {}, None)
    rows, cols = reference.size_rc
    scale = np.array([rows / sample.image.shape[0], cols / sample.image.shape[1]])
    times = {"torch": [], "onnx": []}
    worst = 0.0
    for fixed in fixed_sequence(sample.points_xy.astype(float), args.runs):
        fixed_rc = {i: tuple(np.array([y, x]) * scale) for i, (x, y) in fixed.items()}
        outputs = {}
        for name, predictor in (("torch", reference), ("onnx", onnx)):
            start = time.perf_counter()
            outputs[name] = predictor.predict(image, fixed_rc, first.probs)
            times[name].append(time.perf_counter() - start)
        worst = max(worst, float((outputs["torch"].probs - outputs["onnx"].probs).abs().max()))
    return {name: summary(values) for name, values in times.items()} | {"max_prob_difference": worst}


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(threads_for("torch", args))
    from dataset.synthetic import make_sample

    if args.compare_backends:
        load_before = [round(v, 2) for v in os.getloadavg()]
        result = compare_backends(args, make_sample(0, "test", args.example))
        result |= {"runs": args.runs, "threads": {name: threads_for(name, args) for name in ("torch", "onnx")},
                   "load_average_before": load_before,
                   "load_average_after": [round(v, 2) for v in os.getloadavg()]}
        text = json.dumps(result, indent=1)
        print(text)
        if args.output:
            Path(args.output).write_text(text + "\n")
        return 0

    load_before = [round(v, 2) for v in os.getloadavg()]
    predictor = load(args)
    if args.backend == "onnx":
        from demo.onnx_backend import use_onnx_runtime

        use_onnx_runtime(predictor, threads=threads_for("onnx", args))
    predictor.warm_up()
    checker = load_checker(args, predictor)
    sample = make_sample(0, "test", args.example)
    true_xy = sample.points_xy.astype(float)
    sequence = fixed_sequence(true_xy, args.runs)

    session = AnnotationSession("bench", sample.name, sample.image, predictor, checker=checker)
    model_s, session_s, save_s, score_s, autofix_s = [], [], [], [], []
    with tempfile.TemporaryDirectory() as folder:
        store = AnnotationStore(Path(folder) / STORE_NAME)
        for fixed in sequence:
            start = time.perf_counter()
            state = session.refine(fixed)
            session_s.append(time.perf_counter() - start)
            model_s.append(state.seconds)
            score_s.append(state.score_seconds)
            start = time.perf_counter()
            store.sync(sample.name, *session.records())
            save_s.append(time.perf_counter() - start)
        store.close()
    if checker is not None:
        for fixed in sequence[:max(3, args.runs // 4)]:
            session.refine(fixed)
            start = time.perf_counter()
            session.auto_fix()
            autofix_s.append(time.perf_counter() - start)

    app = DemoApp(predictor, checker=checker)
    server = create_server(app, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    first = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"{server.url}api/example", data=json.dumps({"index": args.example}).encode(),
        headers={"Content-Type": "application/json"}), timeout=60).read())
    http_s = []
    for fixed in sequence:
        body = json.dumps({"session": first["session"], "fixed": {str(i): list(xy) for i, xy in fixed.items()}})
        start = time.perf_counter()
        with urllib.request.urlopen(urllib.request.Request(
                f"{server.url}api/refine", data=body.encode(), headers={"Content-Type": "application/json"}),
                timeout=60) as response:
            answer = json.loads(response.read())
        http_s.append(time.perf_counter() - start)
        assert all(answer["points"][i] == list(xy) for i, xy in fixed.items()), "a fixed point moved"
    server.shutdown()
    server.server_close()

    result = {
        "checkpoint": predictor.source, "model": predictor.model_name, "network_size_rc": list(predictor.size_rc),
        "image_size_rc": list(sample.image.shape), "runs": args.runs, "threads": threads_for(args.backend, args),
        "backend": args.backend,
        "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "load_average_before": load_before, "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "torch": torch.__version__,
        "model_s": summary(model_s), "session_s": summary(session_s), "save_s": summary(save_s),
        "http_s": summary(http_s),
        "detector": None if checker is None else checker.source,
        "score_s": summary(score_s) if checker is not None else None,
        "autofix_s": summary(autofix_s) if checker is not None else None,
        "target_median_s": TARGET_MEDIAN_S,
    }
    # the browser's own share (event, fetch, SVG update, next frame) is a few ms on top: see
    # tests/test_demo_browser.py, which prints the whole path
    result["meets_target"] = result["http_s"]["median_s"] <= TARGET_MEDIAN_S
    text = json.dumps(result, indent=1)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
