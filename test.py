"""Evaluate a trained model with the interactive protocol of the paper: model vs manual revision.

    python test.py --only-test-version quick              # save/quick/best.pth on its own test split
    python test.py --checkpoint pretrained/x.pth --data data/dataset16_512 --out results/x
    python test.py --checkpoint a.pth --ensemble b.pth c.pth ...     # heatmaps of a, b, c averaged

Writes to the output folder: results.json (every metric per click), results.md (the table),
mre_per_click.png, and predictions.npz (per image and click: coordinates of both revisions in the
network grid and in original pixels, the truth, the click order), so anyone can recompute the
metrics without this code, and per_image.csv (model revision's MRE and Cobb SMAPE per image and click,
small enough to commit; tools/compare_runs.py --paired-to compares runs image by image on it).
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import torch

import util
from dataset.keypoint_dataset import KeypointDataset, collate
from misc.cobb import NUM_KEYPOINTS as COBB_KEYPOINTS, smape_per_image
from misc.cobb_eval import (REVISIONS, cobb_metrics, format_cobb_table, plot_cobb, predicted_cobb_angles,
                            true_cobb_angles)
from misc.evaluation import evaluate, original_frame, per_image_errors, summarise
from misc.experiment import BEST_CHECKPOINT, CONFIG_FILE
from misc.report import PAPER_AASCE, PER_IMAGE_FILE, format_table, per_image_csv, plot_mre
from misc.errors import BadInput, report_bad_input
from model import build_model, load_weights, read_checkpoint
from model.ensemble import load_ensemble


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--only-test-version", "--only_test_version", dest="only_test_version", metavar="NAME",
                      help="evaluate save/NAME/best.pth (experiment name under --save-dir); the underscore "
                           "spelling is the official script's")
    what.add_argument("--checkpoint", help="a checkpoint file (ours or the authors' release)")
    parser.add_argument("--ensemble", nargs="+", default=[], metavar="CHECKPOINT",
                        help="average the model's heatmaps with these checkpoints' (a test-time ensemble; each "
                             "built from its stored config, which must predict on the same terms; the first "
                             "model's config drives the evaluation)")
    parser.add_argument("--save-dir", default=None, help="experiments root (default: PATH.SAVE of the config)")
    parser.add_argument("--config", default=None,
                        help="config for --checkpoint (default: the one stored in the checkpoint, "
                             "else config/spineweb_ours.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--data", help="a folder written by data_preprocessing.py; its <split>.json is used")
    parser.add_argument("--split", default="test", choices=("test", "val", "train"),
                        help="which table of the data folder to evaluate (default: %(default)s)")
    parser.add_argument("--out", help="output folder (default: <experiment>/test or next to the checkpoint)")
    parser.add_argument("--max-clicks", type=int, default=None, help="clicks to simulate (default: Test.max_clicks)")
    parser.add_argument("--table-clicks", type=int, default=None, help="columns of the printed table (default: Test.table_clicks)")
    parser.add_argument("--visualize", type=int, default=0, metavar="N",
                        help="write PNG strips (truth, both revisions after 0/1/3/5 clicks) for the first N images")
    parser.add_argument("--batch-size", type=int, default=4,
                        help="images per forward pass: changes speed and memory, not the protocol (default: %(default)s)")
    parser.add_argument("--device", default=None,
                        help="'auto', 'cpu', 'cuda', 'cuda:N' (default: MISC.device of the config)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="allow a checkpoint that needs unpickling (only for files you trust)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    return parser.parse_args(argv)


def list_experiments(root: Path) -> list[str]:
    return sorted(p.parent.name for p in root.glob(f"*/{BEST_CHECKPOINT}")) if root.is_dir() else []


def resolve_model(args):
    """(config, checkpoint read once, default output folder) from the arguments."""
    if args.only_test_version:
        base = util.load_config(args.config or "config/spineweb_ours.yaml")
        root = Path(args.save_dir or base.PATH.SAVE)
        run_dir = root / args.only_test_version
        path = run_dir / BEST_CHECKPOINT
        if not path.is_file():
            found = list_experiments(root)
            raise BadInput(f"no experiment '{args.only_test_version}' with a {BEST_CHECKPOINT} under {root}; "
                           f"available: {', '.join(found) if found else 'none'}")
        checkpoint = read_checkpoint(path, allow_pickle=args.allow_pickle)
        return util.load_config(run_dir / CONFIG_FILE, args.set), checkpoint, run_dir / "test"
    checkpoint = read_checkpoint(args.checkpoint, allow_pickle=args.allow_pickle)
    if args.config:
        config = util.load_config(args.config, args.set)
    else:
        config = checkpoint.config(args.set) or util.load_config("config/spineweb_ours.yaml", args.set)
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
    for key in [k for k in arrays if k.endswith("_rc") and k.startswith(("model_", "manual_"))] + ["true_rc"]:
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


@report_bad_input
def main(argv=None) -> int:
    args = parse_args(argv)
    config, checkpoint, default_out = resolve_model(args)
    if args.data:
        config.PATH.DATA.TABLE = config.PATH.DATA.IMAGE = args.data
    device = util.select_device(args.device or config.MISC.device)
    max_clicks = config.Test.max_clicks if args.max_clicks is None else args.max_clicks
    table_clicks = min(config.Test.table_clicks if args.table_clicks is None else args.table_clicks, max_clicks)
    if args.ensemble:  # never the single model's folder
        default_out = default_out.with_name(f"{default_out.name}_ensemble{1 + len(args.ensemble)}")
    out_dir = Path(args.out) if args.out else default_out
    util.check_output_dir(out_dir)  # before the evaluation, not after it
    net = build_model(config)
    info = load_weights(net, checkpoint)
    net.to(device).eval()
    if args.ensemble:
        net = load_ensemble(net, config, args.ensemble, allow_pickle=args.allow_pickle)
    dataset = KeypointDataset(config, args.split, train=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, collate_fn=collate)
    members = "".join(f" + {path}" for path in args.ensemble)
    print(f"evaluating {checkpoint.path} (epoch {info.get('epoch', '?')}){members} on {len(dataset)} {args.split} images "
          f"from {config.PATH.DATA.TABLE}, 0..{max_clicks} clicks, device {device}")
    arrays = evaluate(net, loader, config, device, max_clicks, progress=not args.no_progress)
    results = summarise(arrays, config.Test.noc_thresholds)
    results["checkpoint"] = str(checkpoint.path)
    if args.ensemble:  # the heatmaps were averaged with these members'
        results["ensemble"] = [str(path) for path in args.ensemble]
    results["data"] = str(config.PATH.DATA.TABLE)
    results["split"] = args.split
    if args.set:  # a results file must say when it is not the checkpoint's own config
        results["config_overrides"] = list(args.set)
    table = format_table(results, table_clicks)
    cobb = None
    if config.Dataset.num_keypoint == COBB_KEYPOINTS:  # Cobb angles need the 17 AASCE vertebrae
        true_angles = true_cobb_angles(dataset.table, arrays)
        predicted = {rev: predicted_cobb_angles(arrays, rev) for rev in REVISIONS}
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
    if args.visualize:
        from misc.visualize import write_strips

        paths = write_strips(arrays, dataset, args.visualize, out_dir / "visualize",
                             true_angles=cobb["true_cobb_angles"] if cobb else None)
        print(f"wrote {len(paths)} picture strips to {out_dir / 'visualize'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
