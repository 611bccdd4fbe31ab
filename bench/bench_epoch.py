"""Where the wall time of one training epoch goes, per component, for a training config.

Times on real batches of the config's training split (so augmentation, click sampling and the
click-round count follow the config):
  data            one sample through KeypointDataset.__getitem__ (load, augment, clicks)
  click_rounds    the no-grad worst-first rounds of one batch (eval mode, per batch and per round)
  forward_loss    the forward with gradient and the loss (BCE + morphology)
  backward_step   backward, the gradient norm and the optimizer step (engine.trainer.optimizer_step)
  finite_check    the trainer's per-step check that loss and weights are finite (one fused reduction);
                  finite_check_per_tensor_s, outside the totals, is the per-tensor reading it replaced
  validation      model revision 0..Train.val_clicks on a few validation images
and prints, as JSON, the medians and the epoch they add up to (training batches x batch time +
validation of the whole split / Train.val_every). Weights are the config's initialisation (random
or --init-weights): the cost does not depend on the weight values, except that a trained network's
click rounds are identical work. The load average is recorded: on a shared 2-core machine numbers
move with what else runs, so compare variants measured in one invocation or under the same load.

    python bench/bench_epoch.py --config config/aasce_cpu_clicks2.yaml --batches 6 --threads 1
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import util  # noqa: E402
from dataset.keypoint_dataset import KeypointDataset, collate, read_training_table  # noqa: E402
from engine.evaluation import evaluate  # noqa: E402
from misc.heatmaps import gaussian_heatmaps  # noqa: E402
from dataset.morph_pairs import load_morph_pairs  # noqa: E402
from engine.training import compute_loss, simulate_click_rounds, start_clicks  # noqa: E402
from model import build_model  # noqa: E402
from model.predictor import Predictor  # noqa: E402
from engine.trainer import all_finite, build_optimizer, optimizer_step  # noqa: E402
from model.weights import non_finite_tensors  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", default="config/aasce_cpu_clicks2.yaml", help="training config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--batches", type=int, default=6, help="timed training batches (after one warm-up)")
    parser.add_argument("--samples", type=int, default=32, help="samples timed through the dataset")
    parser.add_argument("--val-images", type=int, default=8, help="validation images timed")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--default-allocator", action="store_true",
                        help="leave glibc's malloc as it is (train.py and test.py keep freed memory for "
                             "reuse: util.reuse_freed_memory); for measuring what that saves")
    args = parser.parse_args(argv)
    for name in ("batches", "samples", "val_images", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    reused = False if args.default_allocator else util.reuse_freed_memory()
    config = util.load_config(args.config, args.set)
    device = torch.device("cpu")
    train_set = KeypointDataset(config, "train", table=read_training_table(config))  # the trainer's batch count
    train_set.set_epoch(1)
    samples = min(args.samples, len(train_set))
    data_s = [timed(lambda i=i: train_set[i])[1] for i in range(samples)]

    net = build_model(config).train()
    optimizer, _ = build_optimizer(net, config)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    weights = [t for t in net.state_dict().values() if t.is_floating_point()]
    morph_pairs = tuple(torch.as_tensor(p) for p in load_morph_pairs(config.Morph.pairs))
    loader = torch.utils.data.DataLoader(train_set, batch_size=config.Train.batch_size, collate_fn=collate)
    rng = np.random.default_rng([config.Train.seed, 1])
    predictor = Predictor(net, config)
    rows = []
    for index, batch in enumerate(loader):
        if index > args.batches:
            break
        image, true_rc = batch["image"], batch["coords_rc"]
        targets = gaussian_heatmaps(true_rc, config.Dataset.image_size, config.Dataset.heatmap_std)
        clicker, rounds = start_clicks(batch, true_rc, config.Train, rng, device)
        prev, t_rounds = timed(lambda: simulate_click_rounds(predictor, image, clicker, rounds))

        def forward_loss():
            logits, aux = net(image, predictor.click_maps(true_rc, clicker.clicked), prev)
            return compute_loss(logits, aux, targets, true_rc, batch["morph_mask"], config, morph_pairs)

        terms, t_forward = timed(forward_loss)

        _, t_backward = timed(lambda: optimizer_step(net, terms.total, optimizer, scaler, config.Train.grad_clip))
        # the trainer's check that loss and weights stay finite (one fused reduction), and, for
        # comparison only, the per-tensor reading it replaced (one device wait per tensor)
        _, t_check = timed(lambda: torch.stack([torch.isfinite(terms.total.detach()), all_finite(weights)]).tolist())
        _, t_check_per_tensor = timed(lambda: non_finite_tensors(net.state_dict()))
        if index > 0:  # the first batch warms up allocators and kernels
            rows.append((rounds, t_rounds, t_forward, t_backward, t_check, t_check_per_tensor))

    val_set = KeypointDataset(config, "val")
    val_images = min(args.val_images, len(val_set))
    val_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(val_set, range(val_images)),
                                             batch_size=config.Train.batch_size, collate_fn=collate)
    _, t_val = timed(lambda: evaluate(net, val_loader, config, device, config.Train.val_clicks, progress=False))

    round_count = sum(r[0] for r in rows)
    per_batch = {
        "click_rounds_s": statistics.mean(r[1] for r in rows),
        "forward_loss_s": statistics.median(r[2] for r in rows),
        "backward_step_s": statistics.median(r[3] for r in rows),
        "finite_check_s": statistics.median(r[4] for r in rows),
        "data_s": statistics.median(data_s) * config.Train.batch_size,
    }
    batches = len(loader) if not config.Train.max_batches_per_epoch else min(len(loader), config.Train.max_batches_per_epoch)
    train_epoch = batches * sum(per_batch.values())
    validation = t_val / val_images * len(val_set) / config.Train.val_every
    report = {
        "config": args.config, "overrides": args.set, "threads": args.threads, "reuse_freed_memory": reused,
        "load_average_1min": os.getloadavg()[0],
        "batch_size": config.Train.batch_size, "train_batches_per_epoch": batches,
        "per_batch": {k: round(v, 3) for k, v in per_batch.items()},
        "click_round_s": round(sum(r[1] for r in rows) / round_count, 3) if round_count else None,
        "mean_click_rounds": round(round_count / len(rows), 2),
        "finite_check_per_tensor_s": round(statistics.median(r[5] for r in rows), 3),  # not in the totals
        "epoch_estimate_s": {
            "train": round(train_epoch), "validation_per_epoch": round(validation),
            "total": round(train_epoch + validation),
        },
        "share": {k: round(batches * v / (train_epoch + validation), 3) for k, v in per_batch.items()}
                 | {"validation": round(validation / (train_epoch + validation), 3)},
    }
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
