"""Weight files: our checkpoints, the authors' format, bare state dicts, ImageNet HRNet weights."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from munch import Munch

from model import (CheckpointError, InteractiveKeypointNet, UnsafeCheckpointError, load_imagenet_hrnet, load_weights,
                   read_checkpoint, save_checkpoint)
from conftest import SHARED

K = 68



def small_net(seed: int = 0) -> InteractiveKeypointNet:
    torch.manual_seed(seed)
    return InteractiveKeypointNet(num_keypoints=K, width=8, ocr_width=16, small=True)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


# --- our checkpoints --------------------------------------------------------------------------------

def test_saved_checkpoint_loads_back_bit_identically(tmp_path):
    source, target = small_net(0), small_net(1)
    config = Munch.fromDict({"Model": {"width": 8}, "Dataset": {"image_size": (64, 32)}})
    path = tmp_path / "sub" / "best.pth"
    optimizer = torch.optim.Adam(source.parameters(), lr=1e-3)
    save_checkpoint(path, source, epoch=7, metric={"hargmax_mm_MRE": np.float64(12.5)}, config=config,
                    optimizer=optimizer.state_dict())
    extra = load_weights(target, path)  # weights_only: every extra must be a plain value
    assert_same_weights(source, target)
    assert extra["epoch"] == 7
    assert extra["metric"] == {"hargmax_mm_MRE": 12.5} and type(extra["metric"]["hargmax_mm_MRE"]) is float
    assert extra["config"] == {"Model": {"width": 8}, "Dataset": {"image_size": (64, 32)}}
    assert type(extra["config"]) is dict
    optimizer.load_state_dict(extra["optimizer"])
    assert os.listdir(path.parent) == ["best.pth"]  # no temporary file left behind


def test_save_replaces_an_existing_checkpoint(tmp_path):
    path = tmp_path / "last.pth"
    save_checkpoint(path, small_net(0), epoch=1)
    save_checkpoint(path, small_net(1), epoch=2)
    target = small_net(2)
    assert load_weights(target, path)["epoch"] == 2
    assert_same_weights(small_net(1), target)


def test_authors_format_with_module_prefix_loads(tmp_path):
    source = small_net(0)
    path = tmp_path / "authors.pth"
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 3, "metric": None}, path)
    target = small_net(1)
    assert load_weights(target, path) == {"epoch": 3, "metric": None}
    assert_same_weights(source, target)


def test_bare_state_dict_loads(tmp_path):
    source = small_net(0)
    path = tmp_path / "bare.pth"
    torch.save(source.state_dict(), path)
    target = small_net(1)
    assert load_weights(target, path) == {}
    assert_same_weights(source, target)


def test_official_w8_checkpoint_loads():
    path = SHARED / "reference" / "official_w8_checkpoint.pth"
    if not path.is_file():
        pytest.skip(f"../shared/reference not present: {path} is needed")
    net = InteractiveKeypointNet(num_keypoints=K, width=8, ocr_width=16, small=False)
    assert load_weights(net, path) == {"epoch": 1, "metric": None}


# --- files that do not fit ------------------------------------------------------------------------------

def _save_modified(tmp_path, modify) -> Path:
    state = small_net(0).state_dict()
    modify(state)
    path = tmp_path / "modified.pth"
    torch.save({"model": state, "epoch": 0, "metric": None}, path)
    return path


def test_missing_key_is_named(tmp_path):
    path = _save_modified(tmp_path, lambda s: s.pop("ritm_hrnet.cls_head.bias"))
    with pytest.raises(ValueError, match=r"missing keys[^\n]*\(1\):\n    ritm_hrnet\.cls_head\.bias") as info:
        load_weights(small_net(1), path)
    assert str(path) in str(info.value)


def test_unexpected_key_is_named(tmp_path):
    path = _save_modified(tmp_path, lambda s: s.__setitem__("ritm_hrnet.extra_head.weight", torch.zeros(3)))
    with pytest.raises(ValueError, match=r"unexpected keys[^\n]*\(1\):\n    ritm_hrnet\.extra_head\.weight"):
        load_weights(small_net(1), path)


def test_misshaped_key_is_named_with_both_shapes(tmp_path):
    path = _save_modified(tmp_path, lambda s: s.__setitem__("hintmap_encoder.0.weight", torch.zeros(16, 68, 1, 1)))
    message = re.escape("hintmap_encoder.0.weight: file (16, 68, 1, 1) vs network (16, 136, 1, 1)")
    with pytest.raises(ValueError, match=message):
        load_weights(small_net(1), path)


def test_failed_load_leaves_the_network_untouched(tmp_path):
    path = _save_modified(tmp_path, lambda s: s.pop("ritm_hrnet.cls_head.bias"))
    net = small_net(1)
    with pytest.raises(ValueError):
        load_weights(net, path)
    assert_same_weights(net, small_net(1))


def test_pickled_objects_need_explicit_permission(tmp_path):
    source = small_net(0)
    path = tmp_path / "pickled.pth"
    torch.save({"model": source.state_dict(), "config": Munch(width=8)}, path)  # a Munch must be unpickled
    with pytest.raises(UnsafeCheckpointError, match="allow_pickle=True"):
        load_weights(small_net(1), path)
    target = small_net(1)
    extra = load_weights(target, path, allow_pickle=True)
    assert extra["config"].width == 8
    assert_same_weights(source, target)


def test_values_that_need_pickling_are_refused_when_saving(tmp_path):
    with pytest.raises(TypeError, match="function"):
        save_checkpoint(tmp_path / "bad.pth", small_net(), scheduler={"lr_lambda": lambda epoch: 1.0})
    assert list(tmp_path.iterdir()) == []


def test_missing_checkpoint_file_is_an_error(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*absent.pth"):
        load_weights(small_net(), tmp_path / "absent.pth")


def _broken_files(tmp_path) -> dict:
    good = tmp_path / "good.pth"
    save_checkpoint(good, small_net(0), epoch=1)
    data = good.read_bytes()
    files = {"empty": b"", "truncated": data[: len(data) // 2], "random": np.random.default_rng(0).bytes(4000),
             "text": b"model: weights\n" * 20}
    paths = {}
    for name, content in files.items():
        paths[name] = tmp_path / f"{name}.pth"
        paths[name].write_bytes(content)
    return paths


@pytest.mark.parametrize("kind, message", [
    ("empty", "the file is empty"), ("truncated", "truncated or corrupt checkpoint"),
    ("random", "not a PyTorch checkpoint"), ("text", "not a PyTorch checkpoint")])
def test_broken_files_are_named_and_told_apart_from_pickled_ones(tmp_path, kind, message):
    path = _broken_files(tmp_path)[kind]
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    text = str(info.value)
    assert message in text and str(path) in text and "\n" not in text
    assert not isinstance(info.value, UnsafeCheckpointError) and "allow-pickle" not in text


def test_non_finite_weights_are_refused_with_a_count(tmp_path):
    net = small_net(0)
    with torch.no_grad():
        next(net.parameters())[0].fill_(float("nan"))
    path = tmp_path / "nan.pth"
    save_checkpoint(path, net)
    with pytest.raises(CheckpointError, match=r"nan.pth: 1 of \d+ weight tensors hold NaN or infinite values"):
        read_checkpoint(path)


# --- ImageNet HRNet initialisation -------------------------------------------------------------------

def test_imagenet_weights_load_by_name_and_shape(tmp_path):
    source = small_net(0).ritm_hrnet.state_dict()
    file_state = {
        "model.conv1.weight": source["conv1.weight"] + 1,
        "stage4.2.fuse_layers.0.1.0.weight": source["stage4.1.fuse_layers.0.1.0.weight"] + 1,
        "last_layer.0.weight": source["aux_head.0.weight"] + 1,  # renamed to aux_head
        "layer1.0.conv1.weight": torch.zeros(1, 2, 3),  # wrong shape
        "classifier.weight": torch.zeros(1000, 2048),  # not in the network
    }
    path = tmp_path / "hrnetv2_imagenet.pth"
    torch.save(file_state, path)
    net = small_net(1)
    before = {k: v.clone() for k, v in net.ritm_hrnet.state_dict().items()}
    report = load_imagenet_hrnet(net, path)
    after = net.ritm_hrnet.state_dict()
    assert report.found
    assert report.loaded == ["aux_head.0.weight", "conv1.weight"]
    assert report.unused == ["stage4.2.fuse_layers.0.1.0.weight", "classifier.weight"]  # small: 2 modules
    assert report.shape_mismatch == ["layer1.0.conv1.weight: file (1, 2, 3) vs network (64, 64, 1, 1)"]
    assert torch.equal(after["conv1.weight"], source["conv1.weight"] + 1)
    assert torch.equal(after["aux_head.0.weight"], source["aux_head.0.weight"] + 1)
    assert torch.equal(after["layer1.0.conv1.weight"], before["layer1.0.conv1.weight"])
    assert "layer1.0.conv1.weight" in report.not_initialised


def test_missing_imagenet_file_warns_and_keeps_the_network(tmp_path):
    net = small_net(0)
    with pytest.warns(UserWarning, match="not found"):
        report = load_imagenet_hrnet(net, tmp_path / "absent.pth")
    assert not report.found
    assert_same_weights(net, small_net(0))
