"""The schema every YAML config in ``config/`` is validated against.

One source of truth for every key the code reads. Section and key names follow the official
configuration where it had them (``Dataset.image_size``, ``Train.patience``, ``Morph.use`` ...).
A leaf is described by a ``Spec``: its type, and optionally the allowed values, a fixed list length
or a lower bound. Validation names the file and the dotted key of every problem.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class Spec:
    kind: type | tuple[type, ...]  # int, float, bool, str or list
    item: type | None = None  # element type of a list
    length: int | None = None  # fixed list length
    choices: Sequence[Any] | None = None
    minimum: float | None = None
    help: str = ""
    default: Any = None  # not None: the key is optional and takes this value when absent


INT, FLOAT, BOOL, STR = Spec(int), Spec(float), Spec(bool), Spec(str)


def _int(minimum=None, help=""):
    return Spec(int, minimum=minimum, help=help)


def _float(minimum=None, help=""):
    return Spec(float, minimum=minimum, help=help)


def _choice(*choices, help=""):
    return Spec(str, choices=choices, help=help)


DECISION_METRICS = ("hargmax_mm_MRE", "sargmax_mm_MRE", "hargmax_pixel_MRE", "sargmax_pixel_MRE")

SCHEMA: dict = {
    "PATH": {
        "ROOT_PATH": STR,
        "SAVE": Spec(str, help="folder that holds one sub-folder per experiment"),
        "DATA": {
            "IMAGE": Spec(str, help="preprocessed dataset folder (npy images)"),
            "TABLE": Spec(str, help="folder with train.json / val.json / test.json"),
        },
    },
    "Dataset": {
        "NAME": STR,
        "image_size": Spec(list, item=int, length=2, minimum=8, help="[rows, cols] of the network input"),
        "num_keypoint": _int(1),
        "heatmap_std": _float(0.0),
        "subpixel_decoding": BOOL,
        "subpixel_decoding_patch_size": _int(1),
        "aug": {
            "type": _choice("aug_default", "none"),
            "rotate_limit": _float(0.0, "degrees"),
            "rotate_p": _float(0.0),
            "flip_p": _float(0.0),
            "scale_range": Spec(list, item=float, length=2, minimum=0.01),
            "scale_p": _float(0.0),
            "swap_lr_on_flip": Spec(bool, help="False restores the official (unswapped) labels"),
            # not in the paper: hide a horizontal band of the image (all columns) so that the
            # points under it can only come from the clicks and the shape of the spine
            "occlusion_p": Spec(float, minimum=0.0, default=0.0,
                                help="probability of one occluding band per training image; 0 = off (paper)"),
            "occlusion_height": Spec(list, item=float, length=2, minimum=0.0, default=[0.1, 0.3],
                                     help="band height range as a fraction of the image height"),
        },
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
        "use_prev_heatmap_only_for_hint_index": BOOL,
    },
    "Optimizer": {
        "optimizer": _choice("Adam", "AdamW"),
        "lr": _float(0.0),
        "weight_decay": _float(0.0),
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
        "seed": _int(0),
        "max_batches_per_epoch": _int(0, "0 = the whole training set"),
        "val_clicks": _int(0, "validation metric = mean MRE over model-revision clicks 0..N"),
        "val_every": Spec(int, minimum=1, default=1,
                          help="validate (and choose best.pth) every N epochs and after the last one; "
                               "1 = every epoch (paper). Validation costs about a third of a CPU epoch"),
        "grad_clip": _float(0.0, "max gradient norm; 0 = off"),
        "prev_heatmap": Spec(str, choices=("full", "clicked"), default="full",
                             help="previous prediction fed in training: all channels (official) or "
                                  "only the clicked ones, as at test time with "
                                  "Model.use_prev_heatmap_only_for_hint_index"),
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
        "cosineSimilarityLoss": BOOL,
        "threePointAngle": BOOL,
        "apply_to_augmented": Spec(bool, help="False = official: only non-augmented samples"),
    },
    "Test": {
        "max_clicks": _int(0),
        "table_clicks": _int(0),
        "noc_thresholds": Spec(list, item=float, minimum=0.0, help="MRE thresholds (original px)"),
    },
    "MISC": {
        "TB": BOOL,
        "device": Spec(str, help="'auto', 'cpu', 'cuda' or 'cuda:N'"),
        "num_workers": _int(0),
    },
}


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


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
    if spec.choices is not None and value not in spec.choices:
        problems.append(f"{source}: '{name}' must be one of {list(spec.choices)}, got {value!r}")
    if spec.minimum is not None and any(v < spec.minimum for v in values):
        problems.append(f"{source}: '{name}' must be >= {spec.minimum}, got {value!r}")
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
