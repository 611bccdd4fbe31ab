"""Does a trained model listen to clicks? Displace a click and measure how far the points follow.

    python tools/click_response.py pretrained/aasce_cpu.pth --data data/dataset16_512 --split val

For each image of the split and each chosen keypoint, the keypoint is clicked once at its true
position and once ``--shift`` grid rows lower (about one vertebra at 256x128); the follow ratio is
the movement of a prediction along the shift divided by the shift (1 = follows the click, 0 =
ignores it). Reported for the clicked point, its 4 neighbours on each side, and all other points.
A model whose clicked point does not follow a displaced click cannot steer the other points.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

import util  # noqa: E402
from dataset.keypoint_dataset import KeypointDataset, collate  # noqa: E402
from engine.click_response import displaced_click_response  # noqa: E402
from misc.errors import BadInput, report_bad_input  # noqa: E402
from model import read_checkpoint  # noqa: E402
from model.predictor import Predictor  # noqa: E402


@report_bad_input
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint with its config (pretrained/*.pth, save/<run>/best.pth)")
    parser.add_argument("--data", help="a folder written by data_preprocessing.py (default: the config's)")
    parser.add_argument("--split", default="val", choices=("train", "val", "test"))
    parser.add_argument("--keypoints", default="10,34,58", help="comma-separated keypoint indices to click")
    parser.add_argument("--shift", type=float, default=12.0, help="rows of the network grid (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    checkpoint = read_checkpoint(args.checkpoint)  # read once: config and weights
    config = checkpoint.config()
    if config is None:
        raise BadInput(f"{args.checkpoint}: no config stored in the checkpoint")
    if args.data:
        config.PATH.DATA.TABLE = config.PATH.DATA.IMAGE = args.data
    try:
        keypoints = [int(k) for k in args.keypoints.split(",")]
    except ValueError:
        raise BadInput(f"--keypoints must be comma-separated integers, got '{args.keypoints}'") from None
    if any(not 0 <= k < config.Dataset.num_keypoint for k in keypoints):
        raise BadInput(f"--keypoints must lie in 0..{config.Dataset.num_keypoint - 1}, got {keypoints}")
    device = util.select_device(args.device)
    predictor = Predictor.from_checkpoint(checkpoint, config)
    predictor.net.to(device)
    loader = torch.utils.data.DataLoader(KeypointDataset(config, args.split, train=False),
                                         batch_size=args.batch_size, collate_fn=collate)
    totals: dict[str, float] = {}
    count = 0
    for batch in tqdm(loader, desc="click response"):
        image = batch["image"].to(device)

        def predict(click_rc, clicked):
            # no previous prediction is fed: this isolates what the click itself does
            with torch.no_grad():
                probs = predictor.probs(image, click_rc.to(device), clicked.to(device))
            return predictor.points(probs).cpu()

        for k in keypoints:
            response = displaced_click_response(predict, batch["coords_rc"], k, (args.shift, 0.0))
            for key, value in response.items():
                totals[key] = totals.get(key, 0.0) + value * len(image)
        count += len(image)
    n = count * len(keypoints)
    print(f"{args.checkpoint}: follow ratio of a click moved {args.shift:g} grid rows, {count} {args.split} images, "
          f"keypoints {keypoints}")
    for key in ("clicked", "neighbours", "others"):
        print(f"  {key:10s} {totals[key] / n:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
