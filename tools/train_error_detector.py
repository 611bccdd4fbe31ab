"""Train the error detector of automatic revision (engine/detector_training.py), one resumable command.

    python tools/train_error_detector.py --checkpoint pretrained/aasce_cpu.pth --out runs/error_detector --threads 2
    python tools/train_error_detector.py ... --resume     # after an interruption: keeps the bank and the epochs done
    python tools/train_error_detector.py --out runs/error_detector --update-settings --num-flagged 2 --min-score 1.5

The flagging settings (points flagged per round, minimum score, corrector) are stored in best.pth; they
are chosen on validation with tools/probe_auto_revision.py and written with --update-settings, which
changes nothing else in the file.

The interactive model's predictions of the training images (the bank, stage 1) and the detector's epochs
(stage 2) are saved in the run folder as they finish; best.pth is the detector checkpoint that test.py
--detector and the tool load. The data folder is the checkpoint's (or --data).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import util  # noqa: E402
from engine.detector_training import BANK_FILE, DetectorOptions, train_detector  # noqa: E402
from misc.errors import BadInput, report_bad_input  # noqa: E402
from model.auto_revision import CORRECTORS  # noqa: E402
from model.error_detector import update_settings  # noqa: E402
from model.predictor import Predictor  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    defaults = DetectorOptions()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="pretrained/aasce_cpu.pth", help="the interactive model whose errors to learn (default: %(default)s)")
    parser.add_argument("--data", default=None, help="preprocessed data folder (default: the checkpoint config's data folder)")
    parser.add_argument("--out", required=True, help="run folder (bank.npz, last.pth, best.pth, metrics.jsonl, log.txt)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--bank", default=None,
                        help="start from the bank.npz of another run (same --checkpoint, data and --views) instead "
                             "of predicting the training images again")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="(default: %(default)s)")
    parser.add_argument("--views", type=int, default=defaults.views,
                        help="versions of each training image in the bank (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="(default: %(default)s)")
    parser.add_argument("--lr", type=float, default=defaults.lr, help="(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="(default: %(default)s)")
    parser.add_argument("--model-p", type=float, default=defaults.model_p,
                        help="share of training samples built on the model's own predictions, the others on the "
                             "truth (default: %(default)s)")
    parser.add_argument("--error-p", type=float, default=defaults.error_p,
                        help="probability of simulated errors on a truth sample, half that on a prediction "
                             "(default: %(default)s)")
    parser.add_argument("--heatmap-patch", type=int, default=defaults.heatmap_patch,
                        help="patch of the interactive model's heatmaps the detector reads per point, 0: none "
                             "(default: %(default)s)")
    parser.add_argument("--num-flagged", type=int, default=4,
                        help="points one automatic round flags (stored in best.pth; default: %(default)s)")
    parser.add_argument("--min-score", type=float, default=None,
                        help="flag only points scored at least this (the score is log(1 + error / 2 grid px); default: no minimum)")
    parser.add_argument("--corrector", choices=CORRECTORS, default="shape",
                        help="shape: the shape model fitted to the other points; heatmap: the heatmap's maximum near that (default: %(default)s)")
    parser.add_argument("--radius", type=float, default=8.0, help="the heatmap corrector's search radius in grid px (default: %(default)s)")
    parser.add_argument("--hint-weight", type=float, default=1.0,
                        help="peak of a hint's click map, 1 = as a user's click (default: %(default)s)")
    parser.add_argument("--update-settings", action="store_true",
                        help="only rewrite the flagging settings of --out/best.pth (no training)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


@report_bad_input
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    settings = flagging_settings(args)
    if args.update_settings:
        update_settings(out / "best.pth", settings)
        print(f"{out / 'best.pth'}: settings {settings}")
        return 0
    if out.exists() and any(out.iterdir()) and not args.resume:
        raise BadInput(f"{out} is not empty: pass --resume to continue that run, or another --out")
    if args.bank and not Path(args.bank).is_file():
        raise BadInput(f"--bank {args.bank}: no such file")
    if args.epochs < 1 or args.views < 1 or args.batch_size < 1:
        raise BadInput("--epochs, --views and --batch-size must be at least 1")
    util.check_output_dir(out)
    overrides = (f"PATH.DATA.TABLE={args.data}", f"PATH.DATA.IMAGE={args.data}") if args.data else ()
    predictor = Predictor.from_checkpoint(args.checkpoint, overrides=overrides)
    config = predictor_config(args.checkpoint, overrides)
    options = DetectorOptions(views=args.views, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                              seed=args.seed, heatmap_patch=args.heatmap_patch, model_p=args.model_p,
                              error_p=args.error_p)
    out.mkdir(parents=True, exist_ok=True)
    if args.bank and not (out / BANK_FILE).exists():
        shutil.copyfile(args.bank, out / BANK_FILE)
    log_path = out / "log.txt"

    def log(line: str) -> None:
        stamped = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {line}"
        print(stamped, flush=True)
        with open(log_path, "a") as handle:
            handle.write(stamped + "\n")

    log(f"error detector for {args.checkpoint}, data {config.PATH.DATA.TABLE}, {options}")
    best = train_detector(predictor, config, out, options, settings, resume=args.resume, progress=not args.quiet, log=log)
    log(f"best.pth: epoch {best['epoch']}, validation top-1 among 5 worst {best['top_among_worst']:.3f}, "
        f"mean Spearman {best['mean_spearman']:.3f}")
    return 0


def flagging_settings(args) -> dict:
    if args.num_flagged < 1 or args.radius <= 0 or not 0 < args.hint_weight <= 1:
        raise BadInput("--num-flagged must be at least 1, --radius positive and --hint-weight in (0, 1]")
    settings = {"num_flagged": args.num_flagged, "corrector": args.corrector, "radius": args.radius, "ridge": 1.0}
    if args.hint_weight != 1.0:
        settings["hint_weight"] = args.hint_weight
    if args.min_score is not None:
        settings["min_score"] = args.min_score
    return settings


def predictor_config(checkpoint_path: str, overrides):
    from model import read_checkpoint

    config = read_checkpoint(Path(checkpoint_path)).config(overrides)
    if config is None:
        raise BadInput(f"{checkpoint_path} holds no config: the detector needs one of our checkpoints")
    return config


if __name__ == "__main__":
    sys.exit(main())
