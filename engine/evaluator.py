"""The evaluation job of test.py: find the model, run the interactive protocol (engine/evaluation.py) on
one split, and write what it measured: results.json (every metric per click), results.md (the table),
mre_per_click.png (+ cobb_per_click.png), predictions.npz (per image and click: coordinates of both
revisions in the network grid and in original pixels, the truth, the click order) and per_image.csv.
With ``auto_revision`` > 0 also model revision with automatic rounds (model/auto_revision.py), beside them.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import util
from dataset.keypoint_dataset import KeypointDataset, collate
from engine.cobb_eval import cobb_metrics, format_cobb_table, plot_cobb, predicted_cobb_angles, true_cobb_angles
from engine.evaluation import evaluate, original_frame, per_image_errors, summarise
from engine.experiment import BEST_CHECKPOINT, CONFIG_FILE
from engine.report import PAPER_AASCE, PER_IMAGE_FILE, format_table, per_image_csv, plot_mre
from engine.revision import revisions_in
from misc.cobb import NUM_KEYPOINTS as COBB_KEYPOINTS, smape_per_image
from misc.errors import BadInput
from model import read_checkpoint
from model.ensemble import load_ensemble
from model.predictor import Predictor

DEFAULT_CONFIG = "config/spineweb_ours.yaml"  # for a checkpoint without a stored config (the authors' release)
DEFAULT_DETECTOR = "pretrained/error_detector.pth"  # the error detector of automatic revision


@dataclass
class EvaluationJob:
    """How to evaluate (none of it changes the protocol, except ``split``, ``max_clicks`` and the data)."""
    split: str = "test"
    max_clicks: int | None = None  # None: Test.max_clicks
    table_clicks: int | None = None  # None: Test.table_clicks
    batch_size: int = 4
    device: str | None = None  # None: the config's MISC.device, or the CPU when it is missing here
    ensemble: tuple = ()
    visualize: int = 0
    allow_pickle: bool = False
    progress: bool = True
    overrides: tuple = ()
    auto_revision: int = 0  # automatic rounds per prediction; 0: the paper's protocol only
    detector: str = DEFAULT_DETECTOR  # read only when auto_revision > 0
    auto_between_clicks: bool = True  # rounds after every prediction (False: after the 0-click one only)


def list_experiments(root: Path) -> list[str]:
    return sorted(p.parent.name for p in root.glob(f"*/{BEST_CHECKPOINT}")) if root.is_dir() else []


def locate_model(only_test_version: str | None, checkpoint_path: str | None, config_path: str | None = None,
                 overrides=(), save_dir=None, allow_pickle: bool = False):
    """(config, checkpoint read once, default output folder) for an experiment name under the save
    folder, or for a checkpoint file (its stored config unless ``config_path`` is given)."""
    if only_test_version:
        base = util.load_config(config_path or DEFAULT_CONFIG)
        root = Path(save_dir or base.PATH.SAVE)
        run_dir = root / only_test_version
        path = run_dir / BEST_CHECKPOINT
        if not path.is_file():
            found = list_experiments(root)
            raise BadInput(f"no experiment '{only_test_version}' with a {BEST_CHECKPOINT} under {root}; "
                           f"available: {', '.join(found) if found else 'none'}")
        checkpoint = read_checkpoint(path, allow_pickle=allow_pickle)
        return util.load_config(run_dir / CONFIG_FILE, overrides), checkpoint, run_dir / "test"
    checkpoint = read_checkpoint(checkpoint_path, allow_pickle=allow_pickle)
    if config_path:
        config = util.load_config(config_path, overrides)
    else:
        config = checkpoint.config(overrides) or util.load_config(DEFAULT_CONFIG, overrides)
    return config, checkpoint, checkpoint.path.parent / f"{checkpoint.path.stem}_test"


def per_image_text(arrays: dict) -> str:
    """per_image.csv of model revision: MRE (sargmax, original pixels) and, when the arrays hold Cobb angles,
    Cobb SMAPE per image after 0..C clicks. ``arrays``: evaluate()'s output, or predictions.npz loaded."""
    mre = per_image_errors(arrays, "model", "sargmax", "mm")
    smape = None
    if "model_cobb_angles" in arrays:
        predicted, true = arrays["model_cobb_angles"], arrays["true_cobb_angles"]
        smape = np.stack([smape_per_image(predicted[:, c], true) for c in range(predicted.shape[1])], axis=1)
    return per_image_csv([str(name) for name in arrays["names"]], mre, smape)


def save_outputs(out_dir: Path, arrays: dict, results: dict, table: str, config, cobb: dict | None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    util.atomic_write_json(out_dir / "results.json", results)
    util.atomic_write_text(out_dir / "results.md", table + "\n")
    npz = {key: value for key, value in arrays.items()}
    revisions = tuple(f"{revision}_" for revision in revisions_in(arrays))
    for key in [k for k in arrays if k.endswith("_rc") and k.startswith(revisions)] + ["true_rc"]:
        npz[key.replace("_rc", "_original_rc")] = original_frame(arrays, key)
    if cobb is not None:
        npz.update(cobb)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **npz)
    util.atomic_write_bytes(out_dir / "predictions.npz", buffer.getvalue())
    util.atomic_write_text(out_dir / PER_IMAGE_FILE, per_image_text(npz))
    reference = PAPER_AASCE if config.Dataset.NAME == "dataset16" else None
    plot_mre(results, out_dir / "mre_per_click.png", reference=reference)
    if cobb is not None:
        plot_cobb(results, out_dir / "cobb_per_click.png")


def run_evaluation(config, checkpoint, out_dir: Path, job: EvaluationJob) -> dict:
    """Evaluate ``checkpoint`` (built with ``config``) on ``job.split`` of the config's data folder,
    print the table and write the outputs to ``out_dir``; returns results.json's content."""
    device = util.select_device(job.device or config.MISC.device, fallback_to_cpu=job.device is None)
    if device.type == "cpu":
        util.reuse_freed_memory()
    max_clicks = config.Test.max_clicks if job.max_clicks is None else job.max_clicks
    table_clicks = min(config.Test.table_clicks if job.table_clicks is None else job.table_clicks, max_clicks)
    util.check_output_dir(out_dir)  # before the evaluation, not after it
    net = Predictor.from_checkpoint(checkpoint, config).net.to(device)
    if job.ensemble:
        net = load_ensemble(net, config, job.ensemble, allow_pickle=job.allow_pickle)
    reviser = None
    if job.auto_revision:  # before the evaluation: a missing detector file is a BadInput naming it
        from model.auto_revision import AutoReviser

        reviser = AutoReviser.from_checkpoint(job.detector, Predictor(net, config))
    dataset = KeypointDataset(config, job.split, train=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=job.batch_size, collate_fn=collate,
                                         pin_memory=device.type == "cuda")
    members = "".join(f" + {path}" for path in job.ensemble)
    print(f"evaluating {checkpoint.path} (epoch {checkpoint.entries.get('epoch', '?')}){members} on {len(dataset)} "
          f"{job.split} images from {config.PATH.DATA.TABLE}, 0..{max_clicks} clicks, device {device}")
    if reviser is not None:
        print(f"with automatic revision: {job.auto_revision} round(s) with the detector {job.detector} after the "
              f"0-click prediction{' and after every click' if job.auto_between_clicks else ''}")
    arrays = evaluate(net, loader, config, device, max_clicks, progress=job.progress, reviser=reviser,
                      auto_rounds=job.auto_revision, auto_between_clicks=job.auto_between_clicks)
    results = summarise(arrays, config.Test.noc_thresholds)
    results["checkpoint"] = str(checkpoint.path)
    if job.ensemble:  # the heatmaps were averaged with these members'
        results["ensemble"] = [str(path) for path in job.ensemble]
    results["data"] = str(config.PATH.DATA.TABLE)
    results["split"] = job.split
    if job.overrides:  # a results file must say when it is not the checkpoint's own config
        results["config_overrides"] = list(job.overrides)
    if reviser is not None:
        results["auto_revision"] = {"rounds": int(job.auto_revision), "detector": str(job.detector),
                                    "between_clicks": bool(job.auto_between_clicks),
                                    "num_flagged": reviser.num_flagged,
                                    "corrector": type(reviser.corrector).__name__,
                                    "min_score": reviser.min_score if np.isfinite(reviser.min_score) else None}
    table = format_table(results, table_clicks)
    cobb = None
    if config.Dataset.num_keypoint == COBB_KEYPOINTS:  # Cobb angles need the 17 AASCE vertebrae
        true_angles = true_cobb_angles(dataset.table, arrays)
        predicted = {rev: predicted_cobb_angles(arrays, rev) for rev in revisions_in(arrays)}
        for revision, metrics in cobb_metrics(arrays, true_angles, predicted=predicted).items():
            results[revision].update(metrics)
        table += "\n\n" + format_cobb_table(results, table_clicks)
        cobb = {"true_cobb_angles": true_angles, **{f"{rev}_cobb_angles": angles for rev, (angles, _) in predicted.items()}}
    print(table)
    try:
        save_outputs(out_dir, arrays, results, table, config, cobb)
    except OSError as exc:  # e.g. the disk filled up during the evaluation; atomic writes left no half files
        raise BadInput(f"cannot write the results to {out_dir}: {exc.strerror or exc}") from None
    print(f"wrote {out_dir}/results.json, results.md, predictions.npz, {PER_IMAGE_FILE} and the plots")
    if job.visualize:
        from engine.visualize import write_strips

        paths = write_strips(arrays, dataset, job.visualize, out_dir / "visualize",
                             true_angles=cobb["true_cobb_angles"] if cobb else None)
        print(f"wrote {len(paths)} picture strips to {out_dir / 'visualize'}")
    return results
