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

from misc.errors import BadInput
from config_schema import ConfigError, fill_defaults, migrate_old_keys, normalise_floats, old_key_note, validate

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


def _mapping_without_duplicates(loader: _YamlLoader, node: yaml.MappingNode, deep: bool = False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}' (first at line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_YamlLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def read_yaml(text: str):
    """YAML -> Python; a key given twice in one mapping is an error (YAML would keep the last silently)."""
    return yaml.load(text, Loader=_YamlLoader)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: what is wrong and where (line, column)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


__all__ = ["ConfigError", "load_config", "merge_config_trees", "config_from_dict", "parse_override",
           "select_device", "seed_everything", "atomic_open", "atomic_write_bytes", "atomic_write_json",
           "atomic_write_text", "config_to_yaml", "check_output_dir", "check_free_space", "BadInput"]


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
        raise ConfigError(f"override '{text}': value is not valid YAML: {_yaml_problem(exc)}") from None
    return keys, value


def _apply_override(tree: dict, keys: list[str], value, text: str) -> None:
    node = tree
    for depth, key in enumerate(keys[:-1]):
        if not isinstance(node.get(key), dict):
            raise ConfigError(f"override '{text}': unknown section '{'.'.join(keys[:depth + 1])}'")
        node = node[key]
    if keys[-1] not in node:
        note = old_key_note(keys)
        if note:
            raise ConfigError(f"override '{text}': {note}")
        raise ConfigError(f"override '{text}': unknown key '{'.'.join(keys)}'")
    node[keys[-1]] = value


BASE_KEY = "BASE"  # top-level key: the config this one starts from (a path relative to this file's folder)


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> Munch:
    """Read a YAML config, apply ``--set``-style overrides and validate the result.

    A config may start from another one: ``BASE: other.yaml`` (relative to its own folder) takes every
    value of that file (and of its own ``BASE``) and lets this file's values replace them, so a recipe
    stage lists only what it changes. Every unknown, missing or mistyped key raises ``ConfigError`` naming
    the key and the file (or the override that introduced it).
    """
    path = Path(path)
    tree, chain = _read_config_chain(path, ())
    source = str(path) if len(chain) == 1 else f"{path} (with {BASE_KEY} {' <- '.join(map(str, chain[1:]))})"
    return config_from_dict(tree, source, overrides)


def _read_config_file(path: Path):
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {exc.start} is 0x{exc.object[exc.start]:02x})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        return read_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None


def _read_config_chain(path: Path, below: tuple[Path, ...]) -> tuple[object, tuple[Path, ...]]:
    """(tree of ``path`` merged over its ``BASE`` chain, the chain's files from ``path`` down)."""
    tree = _read_config_file(path)
    if not isinstance(tree, dict) or BASE_KEY not in tree:
        return tree, (path,)
    tree = dict(tree)
    base = tree.pop(BASE_KEY)
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: {BASE_KEY} must name another config file (a path relative to "
                          f"{path.parent}), got {base!r}")
    base_path = path.parent / base
    seen = (*below, path)
    if any(base_path.resolve() == p.resolve() for p in seen):
        raise ConfigError(f"{path}: {BASE_KEY} chain returns to a file it started from: "
                          + " -> ".join(map(str, (*seen, base_path))))
    if not base_path.is_file():
        raise ConfigError(f"{path}: {BASE_KEY} '{base}' not found (looked for {base_path})")
    base_tree, chain = _read_config_chain(base_path, seen)
    if not isinstance(base_tree, dict):
        raise ConfigError(f"{base_path} ({BASE_KEY} of {path}): expected a mapping of sections, "
                          f"got {type(base_tree).__name__}")
    return merge_config_trees(base_tree, tree), (path, *chain)


def merge_config_trees(base: dict, changes: dict) -> dict:
    """New tree: ``base`` with the values of ``changes`` put in; mappings merge key by key, any other
    value (lists too) replaces the base's whole."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_config_trees(merged[key], value)
        else:
            merged[key] = value
    return merged


def _one_or_listed(what: str, problems: list[str]) -> str:
    return f"{what}: {problems[0]}" if len(problems) == 1 else f"{what}:\n  " + "\n  ".join(problems)


def config_from_dict(tree: dict, source: str, overrides: Iterable[str] = ()) -> Munch:
    """Validate a config tree (e.g. one stored in a checkpoint), apply overrides, return a Munch.

    Keys of older configs are dropped or mapped first (``migrate_old_keys``), then absent optional
    keys (switches newer than the paper's config) take their defaults.
    """
    tree = fill_defaults(migrate_old_keys(tree, source))
    problems = validate(tree, source=source)
    if problems:
        raise ConfigError(_one_or_listed("invalid config", problems))
    tree = json.loads(json.dumps(tree))  # a private copy: overrides must not touch the caller's dict
    overrides = list(overrides)
    for text in overrides:
        keys, value = parse_override(text)
        _apply_override(tree, keys, value, text)
    if overrides:
        problems = validate(tree, source=f"{source} with overrides")
        last_set = {t.split("=", 1)[0].strip(): t for t in overrides}  # the override that decided each key
        problems = [p + "".join(f" (--set {t})" for key, t in last_set.items() if f"'{key}'" in p) for p in problems]
        if problems:
            raise ConfigError(_one_or_listed("invalid override", problems))
    return Munch.fromDict(normalise_floats(tree))


def config_to_yaml(config: Munch) -> str:
    return yaml.safe_dump(config.toDict() if hasattr(config, "toDict") else dict(config), sort_keys=False)


def select_device(requested: str = "auto", fallback_to_cpu: bool = False):
    """'auto' -> CUDA when present, else CPU (with a one-line notice). A named CUDA device that this
    machine lacks is refused, or, with ``fallback_to_cpu`` (the name came from a stored config, not
    from the person: where a run was trained does not decide where it runs now), the CPU with a notice."""
    import torch

    if requested in ("", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        print("notice: no CUDA device found, running on CPU")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise BadInput(f"device '{requested}' is not a device name (use 'auto', 'cpu', 'cuda' or 'cuda:N')") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        if fallback_to_cpu:
            print(f"notice: the config asks for device '{requested}' (MISC.device), but CUDA is not available "
                  f"here: running on CPU (pass --device to choose)")
            return torch.device("cpu")
        raise BadInput(f"device '{requested}' requested but CUDA is not available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise BadInput(f"device '{requested}' requested but this machine has {torch.cuda.device_count()} CUDA "
                       f"device(s) (cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    return device


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def reuse_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of handing it back to the OS.

    A training step on the CPU allocates and frees the same large tensors every batch (the 68 click and
    previous-heatmap channels at input size are 36 MB at batch 4, above glibc's largest mmap threshold), and
    glibc maps each afresh: the kernel then zeroes every page on first touch, about a quarter of a CPU
    epoch (bench/README.md, *Training cost*). With mmap off and no trimming the process keeps its peak
    heap and reuses it. Only where memory comes from changes, not the arithmetic (`bash test.sh` printed
    the committed table to the last digit). Returns whether it applied:
    not on other C libraries, nor when the person set any MALLOC_* variable (their choice stands)."""
    import ctypes
    import ctypes.util

    if any(name.startswith("MALLOC_") for name in os.environ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # the trim threshold is an int here: 2 GiB - 1 is far above any heap top a step leaves free
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


MIN_FREE_BYTES = 64 * 2**20  # free space an output folder must have before expensive work starts


def _nearest_existing(path: Path) -> Path:
    """``path``, or its nearest existing parent (where it would be created)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_dir(path: str | os.PathLike, min_free_bytes: int = MIN_FREE_BYTES) -> Path:
    """Make sure files can be written in folder ``path`` (or, when it does not exist yet, in its nearest
    existing parent, which is where it will be created) and that ``min_free_bytes`` are free there;
    BadInput (one line naming the folder) otherwise. Creates nothing. Call it before the expensive work."""
    import shutil

    path = Path(path)
    existing = _nearest_existing(path)
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is a file")
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-check-") as handle:
            handle.write(b"\0" * 4096)
            handle.flush()
            os.fsync(handle.fileno())
        free = shutil.disk_usage(existing).free
    except OSError as exc:
        raise BadInput(f"output folder {path} is not writable ({exc.strerror or exc})") from None
    if free < min_free_bytes:
        raise BadInput(f"output folder {path} is (nearly) full: {free / 2**20:.1f} MB free, at least "
                       f"{min_free_bytes / 2**20:.0f} MB needed")
    return path


def check_free_space(folder: str | os.PathLike, needed_bytes: int, what: str) -> None:
    """BadInput (one line naming the folder and ``what``) when ``folder`` (or its nearest existing parent)
    has fewer than ``needed_bytes`` free."""
    import shutil

    free = shutil.disk_usage(_nearest_existing(Path(folder))).free
    if free < needed_bytes:
        raise BadInput(f"not enough free space in {folder} for {what}: {needed_bytes / 2**20:.1f} MB needed, "
                       f"{free / 2**20:.1f} MB free")


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
