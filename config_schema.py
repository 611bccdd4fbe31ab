"""The schema every YAML config in ``config/`` is validated against.

One source of truth for every key the code reads. Section and key names follow the official
configuration where it had them (``Dataset.image_size``, ``Train.patience``, ``Morph.use`` ...).
A leaf is described by a ``Spec``: its type, and optionally the allowed values, a fixed list length
or a lower bound. Validation names the file and the dotted key of every problem.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

from misc.errors import BadInput
from misc.cobb import POINTS_PER_VERTEBRA


@dataclass(frozen=True)
class Spec:
    kind: type | tuple[type, ...]  # int, float, bool, str or list
    item: type | None = None  # element type of a list
    length: int | None = None  # fixed list length
    choices: Sequence[Any] | None = None
    minimum: float | None = None
    maximum: float | None = None
    positive: bool = False  # strictly above zero
    help: str = ""
    default: Any = None  # not None: the key is optional and takes this value when absent


INT, FLOAT, BOOL, STR = Spec(int), Spec(float), Spec(bool), Spec(str)


def _int(minimum=None, help=""):
    return Spec(int, minimum=minimum, help=help)


def _float(minimum=None, help=""):
    return Spec(float, minimum=minimum, help=help)


def _probability(help="", default=None):
    return Spec(float, minimum=0.0, maximum=1.0, help=help, default=default)


def _choice(*choices, help=""):
    return Spec(str, choices=choices, help=help)


# Model.prev_heatmap (see its help); the rule itself is applied in model/predictor.py
PREV_HEATMAP_RULES = ("clicked_at_test", "clicked", "full", "none")

# Official names: "mm" = the original image frame, which on AASCE (no pixel spacing) is ORIGINAL PIXELS;
# "pixel" = pixels of the network grid (misc/frames.py)
CHECKPOINT_RULES = ("best", "last")
TRAINABLE_SPLITS = ("train", "val")
DECISION_METRICS = ("hargmax_mm_MRE", "sargmax_mm_MRE", "hargmax_pixel_MRE", "sargmax_pixel_MRE")

# Far above any useful learning rate or weight decay, yet Adam's first step (lr / (1 - beta1) = 10 lr),
# lr times Optimizer.click_lr_mult and lr times weight_decay (AdamW) stay far inside float32 (whose
# largest finite value is about 3.4e38): torch refuses such factors mid-step with a traceback
MAX_LR = 1e30
# Largest side of an image, stored (data_preprocessing.py --size) or fed to the network
# (Dataset.image_size): 8x the paper's 512. A 4096 x 4096 image is 48 MB (uint8, 3 channels) before any
# resize buffer or activation; 100000 x 100000 would be 30 GB
MAX_IMAGE_SIDE_PX = 4096
MAX_SEED = 2**32 - 1  # numpy's legacy seeding (util.seed_everything) takes seeds in [0, 2**32 - 1]

SCHEMA: dict = {
    "PATH": {
        "SAVE": Spec(str, help="folder that holds one sub-folder per experiment"),
        "DATA": {
            "IMAGE": Spec(str, help="preprocessed dataset folder (npy images)"),
            "TABLE": Spec(str, help="folder with train.json / val.json / test.json"),
        },
    },
    "Dataset": {
        "NAME": STR,
        "image_size": Spec(list, item=int, length=2, minimum=8, maximum=MAX_IMAGE_SIDE_PX,
                           help="[rows, cols] of the network input"),
        "num_keypoint": _int(1),
        "heatmap_std": Spec(float, positive=True, help="std of the Gaussian targets and click maps, grid px"),
        "subpixel_decoding": BOOL,
        "subpixel_decoding_patch_size": _int(1),
        "aug": {
            "type": _choice("aug_default", "none"),
            "rotate_limit": _float(0.0, "degrees"),
            "rotate_p": _probability(),
            "flip_p": _probability(),
            "scale_range": Spec(list, item=float, length=2, minimum=0.01),
            "scale_p": _probability(),
            "swap_lr_on_flip": Spec(bool, help="False restores the official (unswapped) labels"),
            # not in the paper: hide a horizontal band of the image (all columns) so that the
            # points under it can only come from the clicks and the shape of the spine
            "occlusion_p": _probability("probability of one occluding band per training image; 0 = off (paper)",
                                        default=0.0),
            "occlusion_height": Spec(list, item=float, length=2, minimum=0.0, maximum=1.0, default=[0.1, 0.3],
                                     help="band height range as a fraction of the image height"),
        },
        # not in the paper: 17 of 417 AASCE training label files list the topmost vertebra last
        # (dataset/vertebra_order.py)
        "train_vertebra_order": Spec(str, choices=("as_labelled", "fix_rotated"), default="as_labelled",
                                     help="'as_labelled' trains on the labels as they are (paper); "
                                          "'fix_rotated' moves a vertebra (4 points) listed last but lying "
                                          "above all others to the front of a training label; validation "
                                          "and evaluation always use the labels as they are"),
    },
    "Model": {
        "NAME": STR,
        "width": _int(1),
        "ocr_width": _int(1),
        "small": BOOL,
        "SE_maxpool": BOOL,
        "use_gating": BOOL,
        "click_scale_init": FLOAT,
        "imagenet_pretrained": Spec(str, help="HRNet ImageNet weights; '' trains from scratch"),
        "prev_heatmap": Spec(str, choices=PREV_HEATMAP_RULES, default="clicked_at_test",
                             help="the previous prediction fed back with the clicks: 'clicked_at_test' "
                                  "(official) all channels in the training click rounds, only the clicked "
                                  "channels when predicting (evaluation, demo); 'clicked' only the clicked "
                                  "channels in both; 'full' all channels in both; 'none' never (ablation: "
                                  "the network sees only the clicks, the previous-heatmap input is zeros)"),
    },
    "Optimizer": {
        "optimizer": _choice("Adam", "AdamW"),
        "lr": Spec(float, minimum=0.0, maximum=MAX_LR),
        "weight_decay": Spec(float, minimum=0.0, maximum=MAX_LR),
        "scheduler": _choice("", "cosine"),
        "click_lr_mult": Spec(float, minimum=0.0, default=1.0,
                              help="learning-rate factor for the click pathway (click encoder and "
                                   "gating block); 1 = one learning rate for all (paper)"),
    },
    "Train": {
        "patience": _int(0),
        "batch_size": _int(1),
        "epoch": _int(1),
        "decision_metric": _choice(*DECISION_METRICS),
        "max_click_rounds": _int(0, "iterative training: 0..N no-grad click rounds per batch"),
        "min_click_rounds": Spec(int, minimum=0, default=0,
                                 help="least no-grad click rounds per batch (0 = paper); the count is "
                                      "drawn uniformly from min_click_rounds..max_click_rounds"),
        "zero_click_p": _probability("probability that a batch is trained without any click: no initial "
                                    "clicks, no click rounds, as the first prediction of the protocol "
                                    "(0 = paper: the rounds and Hint.num_dist alone decide)", default=0.0),
        "localisation_epochs": Spec(int, minimum=0, default=0,
                                    help="the first N epochs are trained without any click and without occluding "
                                         "bands (Dataset.aug.occlusion_p): a warm-up that learns the first "
                                         "prediction from the image alone; 0 = paper"),
        "seed": Spec(int, minimum=0, maximum=MAX_SEED),
        "max_batches_per_epoch": _int(0, "0 = the whole training set"),
        "val_clicks": _int(0, "validation metric = mean MRE over model-revision clicks 0..N"),
        "val_every": Spec(int, minimum=1, default=1,
                          help="validate (and choose best.pth) every N epochs and after the last one; "
                               "1 = every epoch (paper). Validation costs about a third of a CPU epoch"),
        "grad_clip": _float(0.0, "max gradient norm; 0 = off"),
        "ema_decay": Spec(float, minimum=0.0, maximum=0.9999, default=0.0,
                          help="validate and save an exponential moving average of the weights with this "
                               "decay per step (e.g. 0.999); 0 = off, the trained weights themselves (paper)"),
        "train_splits": Spec(list, item=str, default=["train"],
                             help="the tables of the data folder trained on: ['train'] (paper), or "
                                  "['train', 'val'] for every labelled image (validation then measures "
                                  "images it trained on: needs Train.checkpoint 'last')"),
        "checkpoint": Spec(str, choices=CHECKPOINT_RULES, default="best",
                           help="what best.pth holds: 'best' = the weights of the lowest validation metric "
                                "(paper); 'last' = those after the schedule's last epoch, a rule fixed "
                                "beforehand (no early stopping)"),
    },
    "Hint": {
        "max_hint": _int(0),
        "num_dist": _choice("dataset16", "uniform"),
    },
    "Morph": {
        "use": BOOL,
        "pairs": Spec(str, help="'dataset16' (official list) or a JSON file [pairs, triplets]"),
        "angle_lambda": _float(0.0),
        "distance_lambda": _float(0.0),
        "distance_l1": BOOL,
        "apply_to_augmented": Spec(bool, help="False = official: only non-augmented samples"),
    },
    "Test": {
        "max_clicks": _int(0),
        "table_clicks": _int(0),
        "noc_thresholds": Spec(list, item=float, minimum=0.0, help="MRE thresholds (original px)"),
        "flip_average": Spec(bool, default=False,
                             help="predict the image and its mirror (clicks and previous heatmap mirrored, "
                                  "left/right corners swapped) and average the two heatmaps; twice the "
                                  "cost. Evaluation and demo only, never in training. false = paper"),
    },
    "MISC": {
        "TB": BOOL,
        "device": Spec(str, help="'auto', 'cpu', 'cuda' or 'cuda:N'"),
        "num_workers": _int(0),
    },
}


class ConfigError(BadInput):
    """A config file or override that does not fit the schema."""


# Keys of older configs (and of the checkpoints that store them) that nothing reads any more: accepted
# and dropped when a config is loaded, refused in new ``--set`` overrides.
IGNORED_OLD_KEYS = {
    ("PATH", "ROOT_PATH"): "never read",
    ("Morph", "cosineSimilarityLoss"): "never read: the angle term is always the cosine similarity",
    ("Morph", "threePointAngle"): "never read: the triplets come from Morph.pairs",
}
# The two keys that held the previous-heatmap rule before Model.prev_heatmap:
# (Model.use_prev_heatmap_only_for_hint_index, Train.prev_heatmap) -> Model.prev_heatmap
OLD_PREV_HEATMAP_KEYS = (("Model", "use_prev_heatmap_only_for_hint_index"), ("Train", "prev_heatmap"))
_OLD_PREV_HEATMAP_RULES = {(True, "full"): "clicked_at_test", (True, "clicked"): "clicked", (False, "full"): "full"}


def old_key_note(keys: list[str]) -> str | None:
    """Why a dotted key of an older config is no longer accepted in an override (None: not an old key)."""
    pair = tuple(keys)
    if pair in IGNORED_OLD_KEYS:
        return f"'{'.'.join(keys)}' was removed ({IGNORED_OLD_KEYS[pair]})"
    if pair in OLD_PREV_HEATMAP_KEYS:
        return f"'{'.'.join(keys)}' was replaced by Model.prev_heatmap (one of {list(PREV_HEATMAP_RULES)})"
    return None


def migrate_old_keys(tree: dict, source: str) -> dict:
    """Copy of ``tree`` with the keys of older configs dropped or mapped to their replacement, so that
    old configs and checkpoints load and mean what they meant. Raises ConfigError on a contradiction."""
    if not isinstance(tree, dict):
        return tree
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in tree.items()}
    for (section, key) in IGNORED_OLD_KEYS:
        if isinstance(out.get(section), dict):
            out[section].pop(key, None)
    (model_s, only_key), (train_s, train_key) = OLD_PREV_HEATMAP_KEYS
    model, train = out.get(model_s), out.get(train_s)
    has_only = isinstance(model, dict) and only_key in model
    has_train = isinstance(train, dict) and train_key in train
    if not (has_only or has_train):
        return out
    if isinstance(model, dict) and "prev_heatmap" in model:
        raise ConfigError(f"{source}: 'Model.prev_heatmap' replaces 'Model.{only_key}' and "
                          f"'Train.{train_key}'; remove the old key(s)")
    only = model.pop(only_key) if has_only else True
    fed_in_training = train.pop(train_key) if has_train else "full"
    rule = _OLD_PREV_HEATMAP_RULES.get((only, fed_in_training))
    if rule is None:
        raise ConfigError(f"{source}: old keys 'Model.{only_key}: {only!r}' with 'Train.{train_key}: "
                          f"{fed_in_training!r}' have no equivalent; set 'Model.prev_heatmap' to one of "
                          f"{list(PREV_HEATMAP_RULES)}")
    if isinstance(model, dict):
        model["prev_heatmap"] = rule
    return out


def _type_ok(value: Any, kind) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _type_name(kind) -> str:
    return getattr(kind, "__name__", str(kind))


def fill_defaults(tree: dict, schema: dict = SCHEMA) -> dict:
    """Copy of ``tree`` with every absent optional key set to its default (recursively).

    Optional keys are switches added after the paper's config; configs and checkpoints written
    before them stay valid and mean what they meant.
    """
    if not isinstance(tree, dict):
        return tree
    out = dict(tree)
    for key, spec in schema.items():
        if isinstance(spec, dict):
            if isinstance(out.get(key), dict):
                out[key] = fill_defaults(out[key], spec)
        elif key not in out and spec.default is not None:
            out[key] = json.loads(json.dumps(spec.default))
    return out


def _cross_key_problems(tree: dict, source: str) -> list[str]:
    """Constraints between keys of a complete, type-checked config tree."""
    problems = []
    train = tree.get("Train", {})
    if train.get("min_click_rounds", 0) > train.get("max_click_rounds", 0):
        problems.append(f"{source}: Train.min_click_rounds ({train['min_click_rounds']}) exceeds "
                        f"Train.max_click_rounds ({train['max_click_rounds']})")
    if train.get("localisation_epochs", 0) >= train.get("epoch", 1):
        problems.append(f"{source}: Train.localisation_epochs ({train['localisation_epochs']}) leaves no epoch "
                        f"with clicks: it must be below Train.epoch ({train.get('epoch')})")
    splits = train.get("train_splits", ["train"])
    if isinstance(splits, list):
        if not splits or any(split not in TRAINABLE_SPLITS for split in splits) or len(set(splits)) != len(splits):
            problems.append(f"{source}: Train.train_splits must list distinct splits of {list(TRAINABLE_SPLITS)}, "
                            f"got {splits!r}")
        elif "val" in splits and train.get("checkpoint", "best") == "best":
            problems.append(f"{source}: Train.train_splits {splits!r} trains on the validation images, so "
                            f"'best' would choose best.pth on images it has seen: set Train.checkpoint: last")
    optimizer = tree.get("Optimizer", {})
    for factor in ("click_lr_mult", "weight_decay"):
        if optimizer.get("lr", 0) * optimizer.get(factor, 1) > MAX_LR:
            problems.append(f"{source}: Optimizer.lr ({optimizer['lr']}) times Optimizer.{factor} "
                            f"({optimizer[factor]}) must be <= {MAX_LR:g}")
    dataset = tree.get("Dataset", {})
    if (dataset.get("train_vertebra_order") == "fix_rotated"
            and dataset.get("num_keypoint", 0) % POINTS_PER_VERTEBRA):
        problems.append(f"{source}: Dataset.train_vertebra_order 'fix_rotated' needs groups of "
                        f"{POINTS_PER_VERTEBRA} points per vertebra, but Dataset.num_keypoint is "
                        f"{dataset['num_keypoint']}")
    return problems


def validate(tree: dict, schema: dict = SCHEMA, source: str = "<config>", prefix: str = "") -> list[str]:
    """Return a list of problems (empty when ``tree`` fits ``schema``)."""
    problems: list[str] = []
    if not isinstance(tree, dict):
        return [f"{source}: '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {type(tree).__name__}"]
    for key in tree:
        if key not in schema:
            problems.append(f"{source}: unknown key '{prefix}{key}'")
    for key, spec in schema.items():
        name = f"{prefix}{key}"
        if key not in tree:
            problems.append(f"{source}: missing key '{name}'")
            continue
        value = tree[key]
        if isinstance(spec, dict):
            problems += validate(value, spec, source, name + ".")
            continue
        problems += _check_leaf(value, spec, name, source)
    if not prefix and schema is SCHEMA and not problems:  # the whole tree, every key well typed
        problems += _cross_key_problems(tree, source)
    return problems


def _check_leaf(value, spec: Spec, name: str, source: str) -> list[str]:
    if not _type_ok(value, spec.kind):
        return [f"{source}: '{name}' must be {_type_name(spec.kind)}, got {value!r}"]
    problems = []
    values = value if spec.kind is list else [value]
    if spec.kind is list:
        if spec.length is not None and len(value) != spec.length:
            problems.append(f"{source}: '{name}' must have {spec.length} items, got {len(value)}")
        bad = [v for v in value if not _type_ok(v, spec.item)]
        if bad:
            problems.append(f"{source}: '{name}' items must be {_type_name(spec.item)}, got {bad!r}")
            return problems
    if float in (spec.kind, spec.item) and not all(math.isfinite(v) for v in values):
        return problems + [f"{source}: '{name}' must be a finite number, got {value!r}"]
    if spec.choices is not None and value not in spec.choices:
        problems.append(f"{source}: '{name}' must be one of {list(spec.choices)}, got {value!r}")
    if spec.minimum is not None and any(v < spec.minimum for v in values):
        problems.append(f"{source}: '{name}' must be >= {spec.minimum}, got {value!r}")
    if spec.maximum is not None and any(v > spec.maximum for v in values):
        problems.append(f"{source}: '{name}' must be <= {spec.maximum}, got {value!r}")
    if spec.positive and any(v <= 0 for v in values):
        problems.append(f"{source}: '{name}' must be > 0, got {value!r}")
    return problems


def normalise_floats(tree: dict, schema: dict = SCHEMA) -> dict:
    """Turn ints given for float keys into floats, so code never sees ``1`` where it expects ``1.0``."""
    out = {}
    for key, value in tree.items():
        spec = schema.get(key)
        if isinstance(spec, dict):
            out[key] = normalise_floats(value, spec)
        elif isinstance(spec, Spec) and spec.kind is float:
            out[key] = float(value)
        elif isinstance(spec, Spec) and spec.kind is list and spec.item is float:
            out[key] = [float(v) for v in value]
        else:
            out[key] = value
    return out
