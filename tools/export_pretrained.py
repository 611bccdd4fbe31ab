"""Export a trained run's best checkpoint for distribution: weights (no optimizer state) plus its config.

    python tools/export_pretrained.py save/aasce_cpu/best.pth pretrained/aasce_cpu.pth

``--half`` stores float16 weights (half the size; ``load_weights`` copies them into the float32
network). For the committed CPU model it moved reported MREs by up to 0.1 px, so it is off by default.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from misc.errors import BadInput, report_bad_input  # noqa: E402
from model import build_model, load_weights, read_checkpoint, save_checkpoint  # noqa: E402


@report_bad_input
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a checkpoint written by train.py (best.pth)")
    parser.add_argument("target", help="output file")
    parser.add_argument("--half", action="store_true", help="store float16 weights")
    args = parser.parse_args(argv)
    checkpoint = read_checkpoint(args.source)  # read once: weights and config
    config = checkpoint.config()
    if config is None:
        raise BadInput(f"{args.source}: no config stored in the checkpoint (not written by train.py)")
    net = build_model(config)
    info = load_weights(net, checkpoint)
    precision = "float16" if args.half else "float32"
    if args.half:
        net.half()
    save_checkpoint(args.target, net, epoch=info.get("epoch"), metric=info.get("metric"), config=config,
                    precision=precision)
    size_mb = Path(args.target).stat().st_size / 2**20
    print(f"wrote {args.target} ({size_mb:.1f} MB, {precision}, epoch {info.get('epoch')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
