"""Shared helpers at the edges of the project: configs, devices, seeding and atomic file writes."""
from __future__ import annotations

import contextlib
import json
import os
import random
import re
import tempfile
from pathlib import Path
from typing import Iterable

import yaml
from munch import Munch

from misc.config_schema import ConfigError, fill_defaults, normalise_floats, validate

class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (plain YAML 1.1 wants ``1.0e-4``)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def read_yaml(text: str):
    return yaml.load(text, Loader=_YamlLoader)


__all__ = ["ConfigError", "load_config", "config_from_dict", "parse_override", "select_device", "seed_everything",
           "atomic_open", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "config_to_yaml"]


def parse_override(text: str) -> tuple[list[str], object]:
    """``'Train.batch_size=2'`` -> (['Train', 'batch_size'], 2); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like Section.key=value")
    dotted, raw = text.split("=", 1)
    keys = [k for k in dotted.strip().split(".")]
    if not all(keys):
        raise ConfigError(f"override '{text}': empty key in '{dotted}'")
    try:
        value = read_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML ({exc})") from None
    return keys, value


def _apply_override(tree: dict, keys: list[str], value, text: str) -> None:
    node = tree
    for depth, key in enumerate(keys[:-1]):
        if not isinstance(node.get(key), dict):
            raise ConfigError(f"override '{text}': unknown section '{'.'.join(keys[:depth + 1])}'")
        node = node[key]
    if keys[-1] not in node:
        raise ConfigError(f"override '{text}': unknown key '{'.'.join(keys)}'")
    node[keys[-1]] = value


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> Munch:
    """Read a YAML config, apply ``--set``-style overrides and validate the result.

    Every unknown, missing or mistyped key raises ``ConfigError`` naming the key and the file
    (or the override that introduced it).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        tree = read_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    return config_from_dict(tree, str(path), overrides)


def config_from_dict(tree: dict, source: str, overrides: Iterable[str] = ()) -> Munch:
    """Validate a config tree (e.g. one stored in a checkpoint), apply overrides, return a Munch.

    Absent optional keys (switches newer than the paper's config) take their defaults first.
    """
    tree = fill_defaults(tree)
    problems = validate(tree, source=source)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    tree = json.loads(json.dumps(tree))  # a private copy: overrides must not touch the caller's dict
    overrides = list(overrides)
    for text in overrides:
        keys, value = parse_override(text)
        _apply_override(tree, keys, value, text)
    if overrides:
        problems = validate(tree, source=f"{source} with overrides {overrides}")
        if problems:
            raise ConfigError("invalid override:\n  " + "\n  ".join(problems))
    return Munch.fromDict(normalise_floats(tree))


def config_from_checkpoint(path: str | os.PathLike, overrides: Iterable[str] = (), *,
                           allow_pickle: bool = False) -> Munch | None:
    """The validated config stored in one of our checkpoints, or None when the file holds none
    (e.g. the authors' release)."""
    from model.weights import read_checkpoint

    stored = read_checkpoint(path, allow_pickle=allow_pickle)
    if isinstance(stored, dict) and isinstance(stored.get("config"), dict):
        return config_from_dict(stored["config"], f"config stored in {path}", overrides)
    return None


def config_to_yaml(config: Munch) -> str:
    return yaml.safe_dump(config.toDict() if hasattr(config, "toDict") else dict(config), sort_keys=False)


def select_device(requested: str = "auto"):
    """'auto' -> CUDA when present, else CPU (with a one-line notice)."""
    import torch

    if requested in ("", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        print("notice: no CUDA device found, running on CPU")
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device '{requested}' requested but CUDA is not available")
    return device


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb"):
    """Write to a temporary file beside ``path`` and rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_json(path, obj, indent: int | None = 1) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")
