"""The torch Dataset over a preprocessed table, and the collate function."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from dataset.augment import augment, build_transform, occlude_band
from misc.clicks import click_count_probs, sample_initial_clicks
from misc.errors import BadInput
from dataset.vertebra_order import unrotate_vertebrae

SPLITS = ("train", "val", "test")


def read_table(table_dir: str | os.PathLike, split: str) -> list[dict]:
    """The JSON table of one split written by data_preprocessing.py."""
    path = Path(table_dir) / f"{split}.json"
    if not path.is_file():
        raise BadInput(f"table '{path}' not found: run data_preprocessing.py first "
                       f"(or point PATH.DATA.TABLE / --data at a preprocessed folder)")
    try:
        table = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"table '{path}' is not valid UTF-8 JSON ({exc})") from None
    if not isinstance(table, list) or not table:
        raise BadInput(f"table '{path}' must be a non-empty JSON list of samples")
    return table


def points_key(entry: dict, path_hint: str) -> str:
    keys = sorted(k for k in entry if k.startswith("points_"))
    if not keys:
        raise KeyError(f"{path_hint}: entry '{entry.get('image')}' has no 'points_<rows>' field")
    return keys[0]


def check_entries(table: list[dict], image_dir: Path, num_keypoints: int, source: str) -> None:
    """Refuse (BadInput naming the file) a table whose points do not number ``num_keypoints`` or whose
    .npy arrays are missing, truncated or not 2-D/3-D uint8-sized images: read from the .npy headers and
    file sizes, before any training or evaluation starts rather than in the middle of an epoch."""
    for entry in table:
        if not isinstance(entry, dict) or "image" not in entry:
            raise BadInput(f"{source}: every sample must be an object with an 'image' field, got {entry!r:.80}")
        image_path = image_dir / entry["image"]
        if not any(k.startswith("points_") for k in entry):
            raise BadInput(f"{source}: sample '{entry['image']}' has no 'points_<rows>' field")
        points = np.asarray(entry[points_key(entry, str(image_path))])
        if points.shape != (num_keypoints, 2):
            raise BadInput(f"{source}: sample '{entry['image']}' has points of shape {points.shape}, but "
                           f"Dataset.num_keypoint is {num_keypoints}")
        problem = npy_problem(image_path)
        if problem:
            raise BadInput(f"{image_path}: {problem} (listed in {source}); run data_preprocessing.py again")


def read_checked_table(config, split: str) -> list[dict]:
    """The table of ``split`` in the config's data folder, every entry and array checked against the config."""
    table = read_table(config.PATH.DATA.TABLE, split)
    check_entries(table, Path(config.PATH.DATA.IMAGE), config.Dataset.num_keypoint,
                  str(Path(config.PATH.DATA.TABLE) / f"{split}.json"))
    return table


def read_training_table(config) -> list[dict]:
    """The entries trained on: the checked tables of every split in ``config.Train.train_splits``."""
    return [entry for split in config.Train.train_splits for entry in read_checked_table(config, split)]


def npy_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete .npy image array, from its header and size (None: it is)."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(handle)
            data_start = handle.tell()
    except FileNotFoundError:
        return "image array not found"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    except (ValueError, EOFError) as exc:
        return f"not a .npy array ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    if len(shape) not in (2, 3) or dtype.hasobject:
        return f"not an image array (shape {shape}, dtype {dtype})"
    expected = data_start + int(np.prod(shape)) * dtype.itemsize
    size = path.stat().st_size
    if size < expected:
        return f"truncated .npy array ({size} bytes, its header announces {expected})"
    return None


class KeypointDataset(torch.utils.data.Dataset):
    """One preprocessed split. Training samples are augmented and carry random initial clicks.

    Randomness is a pure function of (seed, epoch, index), so runs repeat and resume exactly.
    """

    def __init__(self, config, split: str, table: list[dict] | None = None, image_dir: str | None = None,
                 train: bool | None = None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got '{split}'")
        self.split = split
        self.train = (split == "train") if train is None else train
        self.table = table if table is not None else read_table(config.PATH.DATA.TABLE, split)
        self.image_dir = Path(image_dir or config.PATH.DATA.IMAGE)
        if table is None:  # a table given by the caller (a test, the demo) is the caller's to check
            check_entries(self.table, self.image_dir, config.Dataset.num_keypoint,
                          str(Path(config.PATH.DATA.TABLE) / f"{split}.json"))
        self.size_rc = tuple(config.Dataset.image_size)
        self.num_keypoints = config.Dataset.num_keypoint
        self.swap_lr = config.Dataset.aug.swap_lr_on_flip
        self.fix_rotated_labels = self.train and config.Dataset.train_vertebra_order == "fix_rotated"
        self.occlusion_p = config.Dataset.aug.occlusion_p if self.train else 0.0
        self.occlusion_height = tuple(config.Dataset.aug.occlusion_height)
        self.transform = build_transform(config.Dataset.aug, self.size_rc, self.train)
        self.click_probs = click_count_probs(config.Hint.num_dist, config.Hint.max_hint)
        self.seed = config.Train.seed
        self.epoch = 0
        self.occlusion_on = True

    def set_epoch(self, epoch: int, occlusion: bool = True) -> None:
        """The epoch of the augmentation draws; ``occlusion=False`` leaves this epoch's images unhidden
        (the trainer's localisation epochs) without changing any other draw."""
        self.epoch = epoch
        self.occlusion_on = occlusion

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> dict:
        entry = self.table[index]
        image_path = self.image_dir / entry["image"]
        image = np.load(image_path)
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=-1)
        points_xy = np.asarray(entry[points_key(entry, str(image_path))], dtype=np.float64)
        if points_xy.shape != (self.num_keypoints, 2):
            raise ValueError(f"{image_path}: expected {self.num_keypoints} points, got shape {points_xy.shape}")
        if self.fix_rotated_labels:
            points_xy = unrotate_vertebrae(points_xy)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image, points_xy, geometry_unchanged = augment(
            self.transform, image, points_xy, int(rng.integers(2**31 - 1)), self.swap_lr)
        if self.occlusion_p > 0 and self.occlusion_on:
            # a stream of its own, so switching occlusion on leaves every other draw unchanged
            occlusion_rng = np.random.default_rng([self.seed, self.epoch, index, 1])
            if occlusion_rng.random() < self.occlusion_p:
                image = occlude_band(image, occlusion_rng, self.occlusion_height)
        clicks = (sample_initial_clicks(rng, self.num_keypoints, self.click_probs) if self.train
                  else np.zeros(0, dtype=np.int64))
        image_t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0 * 2 - 1
        return {
            "image": image_t,
            "coords_rc": torch.from_numpy(points_xy[:, ::-1].copy()).float(),
            "raw_size_rc": torch.tensor(entry["raw_size_row_col"], dtype=torch.float32),
            "spacing_rc": torch.tensor(entry.get("pixelSpacing", [1, 1]), dtype=torch.float32),
            "morph_mask": torch.tensor(geometry_unchanged),
            "clicks": clicks,
            "index": index,
            "name": entry["image"],
        }


def collate(samples: list[dict]) -> dict:
    """Stack tensors; keep per-sample click lists and names as lists."""
    batch = {key: torch.stack([s[key] for s in samples])
             for key in ("image", "coords_rc", "raw_size_rc", "spacing_rc", "morph_mask")}
    batch["clicks"] = [s["clicks"] for s in samples]
    batch["index"] = torch.tensor([s["index"] for s in samples])
    batch["name"] = [s["name"] for s in samples]
    return batch
