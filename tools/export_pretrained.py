"""Export a trained run's best checkpoint for distribution: weights in half precision plus its config.

    python tools/export_pretrained.py save/aasce_cpu/best.pth pretrained/aasce_cpu.pth

The network is always run in float32: ``load_weights`` copies the half-precision tensors into the
float32 parameters. Compare ``bash test.sh --checkpoint`` on both files before publishing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import util  # noqa: E402
from model import build_model, load_weights, save_checkpoint  # noqa: E402
from model.weights import read_checkpoint  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a checkpoint written by train.py (best.pth)")
    parser.add_argument("target", help="output file")
    args = parser.parse_args(argv)
    stored = read_checkpoint(args.source)
    config = util.config_from_dict(stored["config"], f"config stored in {args.source}")
    net = build_model(config)
    info = load_weights(net, args.source)
    net.half()
    save_checkpoint(args.target, net, epoch=info.get("epoch"), metric=info.get("metric"), config=config,
                    precision="float16")
    size_mb = Path(args.target).stat().st_size / 2**20
    print(f"wrote {args.target} ({size_mb:.1f} MB, float16, epoch {info.get('epoch')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
