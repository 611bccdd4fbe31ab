"""Latency of one interactive refinement on CPU (batch 1, eval, torch.inference_mode).

Prints JSON: for the paper model (HRNet-W32, OCR 128) and a CPU-scale model (default HRNet-W18
small, OCR 64, or the Model section of --cpu-config), the median / min seconds of
  forward_with_aux         net(image, clicks, prev)            (the plain forward, the baseline)
  predict                  net.predict(...)                    (skips upsampling the aux logits)
  predict_folded_bn        prepare_for_inference(net).predict  (BatchNorm folded into the convs)
  predict_folded_bn_cl     ... plus channels_last memory format
and for each the max abs difference of its main logits from the baseline. Variants are run
interleaved (one of each per round) so that load from other processes hits them alike; the load
average is recorded. Weights are random (BatchNorm statistics perturbed so that folding is checked
on non-trivial values): latency does not depend on the weight values.

    python bench/bench_model.py --runs 7 --warmup 2 --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import InteractiveKeypointNet  # noqa: E402
from model.inference import prepare_for_inference  # noqa: E402

PAPER_MODEL = dict(width=32, ocr_width=128, small=False)
CPU_MODEL = dict(width=18, ocr_width=64, small=True)
MATCH_TOLERANCE = 1e-4


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="timed runs per variant (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per variant first")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--size", type=int, nargs=2, default=(512, 256), metavar=("ROWS", "COLS"),
                        help="input size")
    parser.add_argument("--num-keypoint", type=int, default=68)
    parser.add_argument("--cpu-config", default="",
                        help="YAML config (util.load_config) whose Model section defines the CPU-scale "
                             "model; without it: HRNet-W18 small, OCR width 64")
    parser.add_argument("--models", nargs="+", choices=("paper", "cpu"), default=["paper", "cpu"])
    parser.add_argument("--output", default="", help="also write the JSON to this file")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--runs and --threads must be >= 1, --warmup >= 0")
    return args


def cpu_model_spec(config_path: str) -> dict:
    if not config_path:
        return dict(CPU_MODEL)
    from util import load_config

    m = load_config(config_path).Model
    return dict(width=m.width, ocr_width=m.ocr_width, small=m.small, use_gating=m.use_gating,
                gate_max_pool=m.SE_maxpool)


def make_network(spec: dict, num_keypoints: int) -> nn.Module:
    torch.manual_seed(0)
    net = InteractiveKeypointNet(num_keypoints=num_keypoints, **spec).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net


def make_inputs(rows: int, cols: int, num_keypoints: int):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, rows, cols, generator=g) * 2 - 1
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    gaussian = torch.exp(-((r - rows / 3) ** 2 + (c - cols / 2) ** 2) / (2 * 7.5 ** 2))
    clicks = torch.zeros(1, num_keypoints, rows, cols)
    clicks[0, 3] = gaussian
    prev = torch.zeros_like(clicks)
    prev[0, 3] = torch.rand(rows, cols, generator=g)  # previous prediction on the clicked channel
    return image, clicks, prev


def bench_model(spec: dict, args: argparse.Namespace) -> dict:
    net = make_network(spec, args.num_keypoint)
    image, clicks, prev = make_inputs(*args.size, args.num_keypoint)
    folded = prepare_for_inference(net, fold_bn=True)
    folded_cl = prepare_for_inference(net, fold_bn=True, channels_last=True)
    variants = {
        "forward_with_aux": lambda: net(image, clicks, prev)[0],
        "predict": lambda: net.predict(image, clicks, prev),
        "predict_folded_bn": lambda: folded.predict(image, clicks, prev),
        "predict_folded_bn_cl": lambda: folded_cl.predict(image, clicks, prev),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    diffs = {}
    with torch.inference_mode():
        reference = variants["forward_with_aux"]()
        for name, run in variants.items():
            diffs[name] = float((run() - reference).abs().max())
            for _ in range(args.warmup):
                run()
        for _ in range(args.runs):
            for name, run in variants.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    result = {
        "model": spec,
        "parameters": sum(p.numel() for p in net.parameters()),
        "variants": {
            name: {"median_s": round(statistics.median(t), 4), "min_s": round(min(t), 4),
                   "max_abs_diff_main_logits": diffs[name], "matches": diffs[name] <= MATCH_TOLERANCE}
            for name, t in times.items()
        },
    }
    baseline = result["variants"]["forward_with_aux"]["median_s"]
    best = min((v["median_s"], k) for k, v in result["variants"].items() if v["matches"])
    result["best"] = {"variant": best[1], "median_s": best[0],
                      "speedup_vs_forward_with_aux": round(baseline / best[0], 2)}
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    specs = {"paper": dict(PAPER_MODEL), "cpu": cpu_model_spec(args.cpu_config)}
    report = {
        "what": "one interactive refinement, batch 1, eval, torch.inference_mode, CPU",
        "input_size": list(args.size),
        "runs": args.runs,
        "warmup": args.warmup,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "models": {},
    }
    for name in args.models:
        report["models"][name] = bench_model(specs[name], args)
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(report, indent=1)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
