"""Reading and writing network weights.

Formats read by ``load_weights``:
  (a) our checkpoints: ``{'model': state_dict, 'epoch', 'metric', 'config', ...}`` (keys as in
      ``InteractiveKeypointNet.state_dict()``);
  (b) the authors' released checkpoints: the same layout with every key prefixed by ``module.``
      (they were saved from ``nn.DataParallel``);
  (c) a bare state dict (with or without the ``module.`` prefix).
Files are opened with ``torch.load(..., weights_only=True)``: nothing is unpickled unless the caller
says the file is trusted (``allow_pickle=True``).
"""
from __future__ import annotations

import logging
import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from misc.errors import BadInput
from util import atomic_open, check_free_space, config_from_dict

__all__ = ["Checkpoint", "CheckpointError", "UnsafeCheckpointError", "ImagenetLoadReport", "load_weights",
           "save_checkpoint", "load_imagenet_hrnet", "read_checkpoint", "load_file", "extract_state_dict",
           "non_finite_tensors"]

log = logging.getLogger(__name__)

DATA_PARALLEL_PREFIX = "module."
MAX_LISTED = 40  # keys listed per category in a mismatch message


class CheckpointError(BadInput):
    """A checkpoint file that cannot be used: missing, empty, truncated, not a checkpoint, non-finite
    weights, or weights that do not fit the network. The message names the file."""


class UnsafeCheckpointError(CheckpointError):
    """The file holds pickled Python objects and may only be opened with ``allow_pickle=True``."""


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"  # the older pickle-based format


def _unwrap(net: nn.Module) -> nn.Module:
    """The model inside ``nn.DataParallel`` / ``DistributedDataParallel``."""
    return net.module if isinstance(getattr(net, "module", None), nn.Module) else net


def _format_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a torch.save file, judged from its bytes (None: it may be one)."""
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes): not a checkpoint"
    with open(path, "rb") as handle:
        head = handle.read(len(_LEGACY_MAGIC))
    if head.startswith(_ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            return f"truncated or corrupt checkpoint ({size} bytes; its zip directory is missing)"
        try:  # torch.load does not check the CRCs: a flipped byte in a tensor would load as a wrong weight
            with zipfile.ZipFile(path) as archive:
                damaged = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            return f"truncated or corrupt checkpoint ({_first_line(exc)})"
        if damaged is not None:
            return f"corrupt checkpoint: entry '{damaged}' fails its CRC check (the file was damaged)"
        return None
    if head == _LEGACY_MAGIC:
        return None
    return f"not a PyTorch checkpoint (unknown file format, {size} bytes)"


def load_file(path: str | os.PathLike, *, allow_pickle: bool = False) -> Any:
    """``torch.load`` on CPU with one-line errors; refuses files that need unpickling unless
    ``allow_pickle`` is True, and tells them apart from files that are not checkpoints at all."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    problem = _format_problem(path)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as exc:
        if allow_pickle or not _needs_unpickling(exc):
            raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({_first_line(exc)})") from None
        raise UnsafeCheckpointError(
            f"{path}: this file stores pickled Python objects, not only tensors and plain values, so it "
            f"was not opened (unpickling can run arbitrary code); if you trust the file, pass "
            f"allow_pickle=True (command line: --allow-pickle)") from None
    except (RuntimeError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({_first_line(exc)})") from None


def _needs_unpickling(exc: pickle.UnpicklingError) -> bool:
    """torch's weights-only loader refused a Python object it does not allow (``Unsupported global``,
    ``unsupported GLOBAL ... is blocked``), rather than bytes it could not parse."""
    return "unsupported global" in str(exc).lower()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else 'no detail'}"[:200]


def non_finite_tensors(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of floating-point tensors holding NaN or infinite values."""
    return [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


@dataclass
class Checkpoint:
    """One checkpoint file, read once: the weights (``module.`` prefixes removed), the other entries
    (epoch, metric, optimizer ...) and, for our own files, the stored config."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    entries: dict[str, Any]

    def config(self, overrides=()):
        """The validated config stored in the file (Munch), or None when it holds none (e.g. the
        authors' release)."""
        stored = self.entries.get("config")
        if not isinstance(stored, Mapping):
            return None
        return config_from_dict(dict(stored), f"config stored in {self.path}", overrides)


def read_checkpoint(path: str | os.PathLike, *, allow_pickle: bool = False) -> Checkpoint:
    """Read a checkpoint (ours, the authors' or a bare state dict) once; refuse it with a one-line
    CheckpointError when it is missing, unreadable, not a state dict, or holds non-finite weights."""
    path = Path(path)
    state_dict, entries = extract_state_dict(load_file(path, allow_pickle=allow_pickle), source=str(path))
    broken = non_finite_tensors(state_dict)
    if broken:
        raise CheckpointError(f"{path}: {len(broken)} of {len(state_dict)} weight tensors hold NaN or infinite "
                              f"values (first: {broken[0]}); this model is broken, use an earlier checkpoint")
    return Checkpoint(path, state_dict, entries)


def extract_state_dict(obj: Any, source: str = "<checkpoint>") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a loaded checkpoint into (state dict without ``module.`` prefixes, other entries)."""
    extra: dict[str, Any] = {}
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        extra = {k: v for k, v in obj.items() if k != "model"}
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{source}: expected a state dict or a dict with key 'model', got {type(obj).__name__}")
    not_tensors = [k for k, v in obj.items() if not torch.is_tensor(v)]
    if not_tensors:
        raise CheckpointError(f"{source}: not a state dict, these entries are not tensors: {not_tensors[:MAX_LISTED]}")
    if all(k.startswith(DATA_PARALLEL_PREFIX) for k in obj):
        obj = {k[len(DATA_PARALLEL_PREFIX):]: v for k, v in obj.items()}
    return dict(obj), extra


def _listing(title: str, items: list[str]) -> str:
    shown = "\n    ".join(items[:MAX_LISTED])
    more = f"\n    ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return f"  {title} ({len(items)}):\n    {shown}{more}"


def check_state_dict(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor],
                     source: str) -> None:
    """Raise CheckpointError listing missing keys, unexpected keys and shape mismatches."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    mismatched = [f"{k}: file {tuple(given[k].shape)} vs network {tuple(v.shape)}"
                  for k, v in expected.items() if k in given and given[k].shape != v.shape]
    if not (missing or unexpected or mismatched):
        return
    parts = [f"{source}: the weights do not fit the network"]
    if missing:
        parts.append(_listing("missing keys (in the network, not in the file)", missing))
    if unexpected:
        parts.append(_listing("unexpected keys (in the file, not in the network)", unexpected))
    if mismatched:
        parts.append(_listing("shape mismatches", mismatched))
    parts.append("  Check that the config (width, ocr_width, small, use_gating, num_keypoint) matches the file.")
    raise CheckpointError("\n".join(parts))


def load_weights(net: nn.Module, source: str | os.PathLike | Checkpoint, *, allow_pickle: bool = False) -> dict[str, Any]:
    """Load a checkpoint (a path, read here, or a ``Checkpoint`` already read) into ``net``, strictly.

    Returns the checkpoint's other entries (``epoch``, ``metric``, ``config`` ... ; empty for a bare
    state dict). Raises CheckpointError naming the file and every missing, unexpected or mis-shaped
    key, and UnsafeCheckpointError for a file that needs unpickling when ``allow_pickle`` is False.
    """
    checkpoint = source if isinstance(source, Checkpoint) else read_checkpoint(source, allow_pickle=allow_pickle)
    target = _unwrap(net)
    check_state_dict(target.state_dict(), checkpoint.state_dict, source=str(checkpoint.path))
    target.load_state_dict(checkpoint.state_dict, strict=True)
    return checkpoint.entries


def _plain(value: Any) -> Any:
    """Turn config objects (Munch, other mappings, tuples, paths, numpy scalars) into plain Python
    values that ``torch.load(weights_only=True)`` accepts."""
    if isinstance(value, Mapping):
        return {k if isinstance(k, (int, str)) else str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if torch.is_tensor(value) or value is None:
        return value
    for kind in (bool, int, float, str):  # also turns subclasses such as numpy.float64 into the builtin
        if isinstance(value, kind):
            return kind(value)
    if hasattr(value, "item") and callable(value.item):  # other numpy scalars
        return value.item()
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint; convert it to a plain value")


def save_checkpoint(path: str | os.PathLike, net: nn.Module, **extra: Any) -> None:
    """Write ``{'model': state_dict, **extra}`` atomically (temporary file in the same folder, then
    ``os.replace``), so a crash never leaves a half-written checkpoint. ``extra`` (epoch, metric,
    config ...) must be plain values; Munch configs are converted to dicts."""
    path = Path(path)
    if "model" in extra:
        raise ValueError("'model' is reserved for the state dict")
    payload = {"model": _unwrap(net).state_dict(), **{k: _plain(v) for k, v in extra.items()}}
    # the file replaced stays until the new one is complete: the whole new file must fit beside it
    check_free_space(path.parent, checkpoint_size_estimate(payload), f"{path.name}")
    with atomic_open(path, "wb") as handle:
        torch.save(payload, handle)


CHECKPOINT_OVERHEAD_BYTES = 2**20  # zip directory, 64-byte entry alignment and the pickled structure


def checkpoint_size_estimate(payload: Any) -> int:
    """Bytes ``torch.save`` writes for ``payload``, from above: every tensor's bytes plus an overhead
    per tensor and for the whole file."""
    tensors = []

    def collect(value):
        if torch.is_tensor(value):
            tensors.append(value)
        elif isinstance(value, Mapping):
            for item in value.values():
                collect(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                collect(item)

    collect(payload)
    return CHECKPOINT_OVERHEAD_BYTES + sum(t.untyped_storage().nbytes() + 256 for t in tensors)


@dataclass
class ImagenetLoadReport:
    """What ``load_imagenet_hrnet`` did. ``found`` is False when the file did not exist."""

    found: bool
    loaded: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)  # in both, shapes differ: not loaded
    unused: list[str] = field(default_factory=list)  # in the file only
    not_initialised: list[str] = field(default_factory=list)  # in the network only: kept as initialised


def load_imagenet_hrnet(net: nn.Module, path: str | os.PathLike, *, allow_pickle: bool = False) -> ImagenetLoadReport:
    """Initialise the HRNet part from HRNet-Image-Classification weights (ImageNet, as the paper).

    Keys lose a leading ``model.``; ``last_layer`` becomes ``aux_head``; every tensor whose name and
    shape match ``net.ritm_hrnet`` (or ``net`` itself if it has no ``ritm_hrnet``) is copied, the rest
    is reported. A missing file only warns: the network stays as initialised (trained from scratch).
    """
    target = _unwrap(net)
    target = getattr(target, "ritm_hrnet", target)
    path = Path(path)
    if not path.is_file():
        warnings.warn(f"ImageNet HRNet weights not found at '{path}': training from scratch. Download "
                      f"hrnetv2_w32_imagenet_pretrained.pth from HRNet/HRNet-Image-Classification and set "
                      f"Model.imagenet_pretrained to its path.", stacklevel=2)
        return ImagenetLoadReport(found=False)
    obj = load_file(path, allow_pickle=allow_pickle)
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    state_dict, _ = extract_state_dict(obj, source=str(path))
    renamed = {}
    for key, value in state_dict.items():
        if key.startswith("model."):
            key = key[len("model."):]
        renamed[key.replace("last_layer", "aux_head")] = value

    own = target.state_dict()
    report = ImagenetLoadReport(found=True)
    to_load = {}
    for key, value in renamed.items():
        if key not in own:
            report.unused.append(key)
        elif own[key].shape != value.shape:
            report.shape_mismatch.append(f"{key}: file {tuple(value.shape)} vs network {tuple(own[key].shape)}")
        else:
            to_load[key] = value
    report.loaded = sorted(to_load)
    report.not_initialised = [k for k in own if k not in to_load]
    target.load_state_dict(to_load, strict=False)
    log.info("ImageNet HRNet weights from %s: %d tensors loaded, %d shape mismatches, %d unused, "
             "%d network tensors not initialised from the file", path, len(report.loaded),
             len(report.shape_mismatch), len(report.unused), len(report.not_initialised))
    if report.shape_mismatch:
        log.info("shape mismatches: %s", report.shape_mismatch)
    return report
