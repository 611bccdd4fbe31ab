"""The experiment folder: resolved config, log, metrics, checkpoints and TensorBoard events."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from util import atomic_write_text, config_to_yaml

CONFIG_FILE, LOG_FILE, METRICS_FILE = "config.yaml", "log.txt", "metrics.jsonl"
BEST_CHECKPOINT, LAST_CHECKPOINT = "best.pth", "last.pth"


class Experiment:
    """One run = one folder ``<save_root>/<name>``. Only the main process writes (``writer=False``
    elsewhere), so every method is safe to call on every rank."""

    def __init__(self, save_root, name: str, writer: bool = True, tensorboard: bool = True):
        self.dir = Path(save_root) / name
        self.name = name
        self.is_writer = writer
        self._tb = None
        if writer:
            self.dir.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(self.dir / "tensorboard"))

    @property
    def best_checkpoint(self) -> Path:
        return self.dir / BEST_CHECKPOINT

    @property
    def last_checkpoint(self) -> Path:
        return self.dir / LAST_CHECKPOINT

    def save_config(self, config) -> None:
        if self.is_writer:
            atomic_write_text(self.dir / CONFIG_FILE, config_to_yaml(config))

    def log(self, message: str, echo: bool = True) -> None:
        if not self.is_writer:
            return
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}"
        with open(self.dir / LOG_FILE, "a") as handle:
            handle.write(line + "\n")
        if echo:
            print(line, flush=True)

    def start_after(self, epoch: int) -> list[str]:
        """Make the folder continue after ``epoch`` (0 for a new run), the last epoch last.pth holds: drop
        metrics rows of later epochs (a run stopped after writing an epoch's row but before its
        last.pth trains that epoch again) and the temporary files of interrupted checkpoint and config
        writes. Returns what was done, one phrase each, for the log."""
        if not self.is_writer:
            return []
        done = []
        metrics = self.dir / METRICS_FILE
        if metrics.is_file():
            lines = metrics.read_text().splitlines(keepends=True)
            kept = [line for line in lines if _row_epoch(line) <= epoch]
            if len(kept) != len(lines):
                atomic_write_text(metrics, "".join(kept))
                done.append(f"dropped {len(lines) - len(kept)} row(s) after epoch {epoch} from {METRICS_FILE}")
        for name in (LAST_CHECKPOINT, BEST_CHECKPOINT, CONFIG_FILE, METRICS_FILE):
            for stale in self.dir.glob(f".{name}.*.tmp"):
                stale.unlink(missing_ok=True)
                done.append(f"removed {stale.name}, left by an interrupted write")
        return done

    def record_metrics(self, epoch: int, metrics: dict) -> None:
        if not self.is_writer:
            return
        row = {"epoch": epoch, **{k: _json_number(v) for k, v in metrics.items()}}
        with open(self.dir / METRICS_FILE, "a") as handle:
            handle.write(json.dumps(row, allow_nan=False) + "\n")
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, epoch)

    def add_images(self, tag: str, images_hwc: np.ndarray, epoch: int) -> None:
        if self._tb is not None:
            self._tb.add_images(tag, images_hwc, epoch, dataformats="NHWC")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _row_epoch(line: str) -> float:
    """The epoch of one metrics.jsonl line (a line that is not a complete row, e.g. cut by a crash, counts
    as after every epoch, so that it is dropped)."""
    try:
        return float(json.loads(line)["epoch"])
    except (ValueError, KeyError, TypeError):
        return math.inf


def _json_number(value):
    """NaN and infinities as null: JSON has no token for them (json.dumps would write invalid JSON)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def draw_keypoints(image_chw, true_rc, pred_rc, radius: int = 2) -> np.ndarray:
    """An (H, W, 3) uint8 picture: truth in green, prediction in red, for TensorBoard."""
    image = ((np.asarray(image_chw).transpose(1, 2, 0) + 1) * 127.5).clip(0, 255).astype(np.uint8).copy()
    rows, cols = image.shape[:2]
    for coords, colour in ((true_rc, (0, 255, 0)), (pred_rc, (255, 0, 0))):
        for r, c in np.asarray(coords).round().astype(int):
            image[max(r - radius, 0):min(r + radius + 1, rows), max(c - radius, 0):min(c + radius + 1, cols)] = colour
    return image
