"""Train the interactive keypoint network with the procedure of the paper (README "Training").

    python train.py                                                        # the paper config (a GPU run)
    python train.py --config config/quick.yaml --name my_run
    python train.py --config config/quick.yaml --name my_run --resume      # continue after a stop
    torchrun --nproc_per_node 2 train.py --config ...                      # DistributedDataParallel

One folder per run (``PATH.SAVE/<name>``) holds the resolved config, log.txt, metrics.jsonl,
TensorBoard events, best.pth (lowest validation metric; with Train.checkpoint: last, the last epoch's
weights) and last.pth (everything needed to resume).
The loop itself is engine/trainer.py.
"""
from __future__ import annotations

import argparse
import sys

import util
from engine.trainer import TrainOptions, plan_run, train
from misc.errors import BadInput, report_bad_input

PAPER_CONFIG = "config/spineweb_ours.yaml"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=PAPER_CONFIG,
                        help="YAML config (default: %(default)s, the paper's configuration, made for a GPU)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set Train.batch_size=2 (repeatable)")
    parser.add_argument("--name", help="experiment name (default: the config file's stem)")
    parser.add_argument("--save-dir", help="experiments root (default: PATH.SAVE of the config)")
    parser.add_argument("--resume", action="store_true", help="continue the named run from its last.pth")
    parser.add_argument("--init-weights", metavar="CHECKPOINT",
                        help="start a new run from these model weights (e.g. pretrained/aasce_cpu.pth or a "
                             "run's best.pth; optimizer and schedule start afresh); ignored with --resume")
    parser.add_argument("--device", default=None,
                        help="'auto', 'cpu', 'cuda', 'cuda:N' (default: MISC.device of the config, or the CPU when "
                             "that device is missing here; 'auto' = CUDA when present)")
    parser.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    parser.add_argument("--sync-bn", action="store_true",
                        help="with torchrun: BatchNorm statistics shared across processes (SyncBatchNorm, GPUs)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    parser.add_argument("--time-limit", type=float, default=0, metavar="MINUTES",
                        help="stop cleanly after the epoch that passes this wall-clock budget; "
                             "continue later with --resume (0 = no limit)")
    parser.add_argument("--stop-after-epoch", type=int, default=0, metavar="N",
                        help="stop cleanly after epoch N (the schedule still spans Train.epoch); "
                             "continue later with --resume (0 = run to the end)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the config this command would train with (the file with its BASE chain and "
                             "--set applied; with --resume the run's own) as YAML, and exit")
    args = parser.parse_args(argv)
    if args.stop_after_epoch < 0:
        parser.error(f"--stop-after-epoch must be >= 0, got {args.stop_after_epoch}")
    return args


@report_bad_input
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads is not None and args.threads < 1:
        raise BadInput(f"--threads must be >= 1, got {args.threads}")
    plan = plan_run(args.config, args.set, name=args.name, save_dir=args.save_dir, resume=args.resume,
                    check_free=not args.print_config)
    if args.print_config:
        print(util.config_to_yaml(plan.config), end="")
        return 0
    options = TrainOptions(device=args.device, amp=args.amp, sync_bn=args.sync_bn, threads=args.threads,
                           time_limit_min=args.time_limit, stop_after_epoch=args.stop_after_epoch,
                           progress=not args.no_progress, init_weights=args.init_weights)
    return train(plan, options)


if __name__ == "__main__":
    sys.exit(main())
