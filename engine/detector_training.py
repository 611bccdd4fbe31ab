"""Training the error detector (model/error_detector.py) for automatic revision (model/auto_revision.py).

Two stages in one run folder, each resumable:
1. the bank (bank.npz): the training images in ``views`` versions (the first as is, the others with the
   training augmentation), their truth, and the interactive model's own predictions of each after every
   click count in ``clicks`` (0 and 2: the user clicking the worst point, as in the protocol), on the
   grid, with its heatmaps max-pooled 4 x 4; the validation images' 0-click predictions, for choosing
   the checkpoint;
2. the detector: each sample is a bank image with a set of points (the truth or, with probability
   ``model_p``, one of the model's predictions) to which simulated errors (misc/error_simulation.py)
   are added with probability ``error_p`` (truth) or ``error_p / 2`` (model prediction); the target is
   log(1 + the point's error / 2 px on the grid). After each epoch the detector scores the validation
   predictions; best.pth is the epoch whose top-scored point is most often among its image's 5 worst
   (errors in original pixels), ties broken by the mean per-image Spearman correlation.
"""
from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import util
from dataset.keypoint_dataset import KeypointDataset, collate
from misc.clicks import Clicker
from misc.error_simulation import simulate_errors
from misc.frames import grid_to_original
from misc.ranking import score_quality
from misc.shape_model import fit_shape_model
from model.error_detector import (ErrorDetector, detector_checkpoint_bytes, load_detector_checkpoint, pool_heatmaps,
                                  shape_model_to_entries)

BANK_FILE, LAST_FILE, BEST_FILE = "bank.npz", "last.pth", "best.pth"


@dataclass
class DetectorOptions:
    views: int = 3
    clicks: tuple = (0, 2)
    epochs: int = 24
    batch_size: int = 16
    lr: float = 1e-3
    error_p: float = 0.7
    model_p: float = 0.5  # share of samples built on the model's own prediction (the others on the truth)
    max_errors: int = 3
    seed: int = 0
    width: int = 32
    heatmap_patch: int = 7  # 0: the detector sees the image and the points only
    shape_components: int = 8


def _predictions(predictor, image, true_rc, clicks: tuple) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The model's points after each click count in ``clicks`` (the worst point clicked each time), and
    its heatmaps max-pooled 4 x 4 (float16)."""
    clicker = Clicker(true_rc)
    points_out, pooled_out, probs = [], [], None
    for n in range(max(clicks) + 1):
        probs = predictor.probs(image, true_rc, clicker.clicked, probs)
        points = clicker.revise(predictor.points(probs))
        if n in clicks:
            points_out.append(points.numpy())
            pooled_out.append(pool_heatmaps(probs).half().numpy())
        clicker.click_worst(points)
    return points_out, pooled_out


@torch.inference_mode()
def build_bank(predictor, config, options: DetectorOptions, progress: bool = True) -> dict:
    """The arrays of stage 1 (see the module docstring)."""
    train_aug = KeypointDataset(config, "train", train=True)
    train_plain = KeypointDataset(config, "train", train=False)
    images, truth, predicted, pooled = [], [], [], []
    for view in range(options.views):
        train_aug.set_epoch(1000 + view)
        source = train_plain if view == 0 else train_aug
        loader = torch.utils.data.DataLoader(source, batch_size=8, collate_fn=collate)
        for batch in tqdm(loader, desc=f"bank: training images, view {view + 1}/{options.views}", disable=not progress):
            images.append(batch["image"].half().numpy())
            truth.append(batch["coords_rc"].numpy())
            points, maps = _predictions(predictor, batch["image"], batch["coords_rc"], options.clicks)
            predicted.append(np.stack(points, 1))
            pooled.append(np.stack(maps, 1))
    val = KeypointDataset(config, "val", train=False)
    val_parts: dict = {}
    for batch in tqdm(torch.utils.data.DataLoader(val, batch_size=8, collate_fn=collate), desc="bank: validation",
                      disable=not progress):
        val_parts.setdefault("val_images", []).append(batch["image"].half().numpy())
        val_parts.setdefault("val_true_rc", []).append(batch["coords_rc"].numpy())
        val_parts.setdefault("val_raw_size_rc", []).append(batch["raw_size_rc"].numpy())
        val_parts.setdefault("val_spacing_rc", []).append(batch["spacing_rc"].numpy())
        points, maps = _predictions(predictor, batch["image"], batch["coords_rc"], (0,))
        val_parts.setdefault("val_predicted_rc", []).append(points[0])
        val_parts.setdefault("val_pooled", []).append(maps[0])
    bank = {"images": np.concatenate(images), "true_rc": np.concatenate(truth),
            "predicted_rc": np.concatenate(predicted), "pooled": np.concatenate(pooled),
            "size_rc": np.array(predictor.size_rc)}
    bank.update({key: np.concatenate(value) for key, value in val_parts.items()})
    return bank


def _training_sample(bank: dict, index: int, rng: np.random.Generator, options: DetectorOptions):
    """(points, state) for bank image ``index``: a model prediction (state: which click count) or the truth
    (state 0: scored beside the 0-click heatmaps), maybe with simulated errors."""
    true = bank["true_rc"][index].astype(np.float64)
    use_model = rng.random() < options.model_p
    state = int(rng.integers(bank["predicted_rc"].shape[1])) if use_model else 0
    points = bank["predicted_rc"][index, state].astype(np.float64) if use_model else true + rng.normal(0, 0.7, true.shape)
    if rng.random() < (options.error_p / 2 if use_model else options.error_p):
        corners = true.reshape(-1, 4, 2)
        height = float(np.median(np.abs(corners[:, 2:, 0].mean(1) - corners[:, :2, 0].mean(1))))
        points = simulate_errors(points, rng, scale=max(height, 1.0), max_errors=options.max_errors)
    return points, state


def targets(points_rc: torch.Tensor, true_rc: torch.Tensor) -> torch.Tensor:
    """log(1 + error / 2 px) per point, the detector's regression target."""
    return torch.log1p((points_rc - true_rc).norm(dim=-1) / 2.0)


def validation_quality(detector, bank: dict, batch_size: int = 32) -> dict:
    """score_quality of the detector's scores on the validation predictions, errors in original pixels."""
    detector.eval()
    scores = []
    with torch.no_grad():
        for start in range(0, len(bank["val_images"]), batch_size):
            image = torch.from_numpy(bank["val_images"][start:start + batch_size]).float()
            points = torch.from_numpy(bank["val_predicted_rc"][start:start + batch_size]).float()
            pooled = torch.from_numpy(bank["val_pooled"][start:start + batch_size]).float() if detector.uses_heatmaps else None
            scores.append(detector(image, points, pooled))
    size_rc = tuple(int(v) for v in bank["size_rc"])
    to_original = lambda key: grid_to_original(torch.from_numpy(bank[key]).double(), size_rc,  # noqa: E731
                                               torch.from_numpy(bank["val_raw_size_rc"]).double(),
                                               torch.from_numpy(bank["val_spacing_rc"]).double())
    errors = (to_original("val_predicted_rc") - to_original("val_true_rc")).norm(dim=-1).numpy()
    return score_quality(torch.cat(scores).numpy(), errors)


def _save(path: Path, payload: dict) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    util.atomic_write_bytes(path, buffer.getvalue())


def train_detector(predictor, config, run_dir: Path, options: DetectorOptions, settings: dict, resume: bool = False,
                   progress: bool = True, log=print) -> dict:
    """Both stages; returns the best validation quality. A finished stage is not redone on resume.
    ``settings``: the flagging settings stored in best.pth (model.auto_revision.AutoReviser.from_checkpoint)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    bank_path = run_dir / BANK_FILE
    if bank_path.is_file():
        bank = dict(np.load(bank_path))
        log(f"bank: {len(bank['images'])} training views and {len(bank['val_images'])} validation images from {bank_path}")
    else:
        started = time.time()
        bank = build_bank(predictor, config, options, progress)
        buffer = io.BytesIO()
        np.savez(buffer, **bank)
        util.atomic_write_bytes(bank_path, buffer.getvalue())
        log(f"bank: {len(bank['images'])} training views, {len(bank['val_images'])} validation images "
            f"({time.time() - started:.0f} s)")
    train_shapes = bank["true_rc"][: len(bank["true_rc"]) // options.views]  # view 0: the labels as they are
    shape_model = fit_shape_model(train_shapes, min(options.shape_components, len(train_shapes) - 1))
    size_rc = tuple(int(v) for v in bank["size_rc"])
    torch.manual_seed(options.seed)
    detector = ErrorDetector(size_rc, train_shapes.shape[1], width=options.width, heatmap_patch=options.heatmap_patch)
    optimizer = torch.optim.Adam(detector.parameters(), lr=options.lr)
    steps_per_epoch = len(bank["images"]) // options.batch_size
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, options.epochs * steps_per_epoch)
    start_epoch, best = 0, None
    last_path = run_dir / LAST_FILE
    if resume and last_path.is_file():
        state = torch.load(last_path, map_location="cpu", weights_only=False)
        detector.load_state_dict(state["detector"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best = state["epoch"], state["best"]
        log(f"resumed after epoch {start_epoch}")
    metrics_path = run_dir / "metrics.jsonl"
    for epoch in range(start_epoch + 1, options.epochs + 1):
        detector.train()
        rng = np.random.default_rng([options.seed, epoch])
        order = rng.permutation(len(bank["images"]))[: steps_per_epoch * options.batch_size]
        started, losses = time.time(), []
        for step in tqdm(range(steps_per_epoch), desc=f"detector epoch {epoch}/{options.epochs}", disable=not progress,
                         leave=False):
            index = order[step * options.batch_size:(step + 1) * options.batch_size]
            samples = [_training_sample(bank, i, rng, options) for i in index]
            points = torch.from_numpy(np.stack([p for p, _ in samples])).float()
            pooled = None
            if detector.uses_heatmaps:
                pooled = torch.from_numpy(np.stack([bank["pooled"][i, state] for i, (_, state) in zip(index, samples)])).float()
            image = torch.from_numpy(bank["images"][index]).float()
            true = torch.from_numpy(bank["true_rc"][index]).float()
            loss = F.smooth_l1_loss(detector(image, points, pooled), targets(points, true))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        quality = validation_quality(detector, bank)
        key = (quality["top_among_worst"], quality["mean_spearman"])
        record = {"epoch": epoch, "loss": float(np.mean(losses)), **quality, "seconds": time.time() - started}
        with open(metrics_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        log(f"epoch {epoch}/{options.epochs} loss {record['loss']:.4f} val top-1 among 5 worst "
            f"{quality['top_among_worst']:.3f} Spearman {quality['mean_spearman']:.3f} ({record['seconds']:.0f} s)")
        if best is None or key > tuple(best["key"]):
            best = {"key": list(key), "epoch": epoch, **quality}
            util.atomic_write_bytes(run_dir / BEST_FILE, detector_checkpoint_bytes(
                detector, shape_model_to_entries(shape_model), settings,
                extra={"trained": {"epoch": epoch, "validation": quality, "options": asdict(options)}}))
        _save(last_path, {"detector": detector.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "epoch": epoch, "best": best})
    load_detector_checkpoint(run_dir / BEST_FILE)  # the file we leave reads back
    return best
