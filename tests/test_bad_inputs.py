"""Bad inputs to the command lines: each is refused early with one line that names the file or key and
what is wrong (exit status 2), with no traceback and nothing written."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT

TINY = ["Dataset.image_size=[64,32]", "Dataset.heatmap_std=1.5", "Dataset.subpixel_decoding_patch_size=5",
        "Model.width=8", "Model.ocr_width=16", "Model.small=true"]


def _tiny(path, poison=None):
    from model import build_model, save_checkpoint
    from util import load_config

    config = load_config("config/quick.yaml", TINY)
    torch.manual_seed(0)
    net = build_model(config)
    if poison is not None:
        with torch.no_grad():
            poison(net)
    save_checkpoint(path, net, epoch=0, config=config)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """name -> (path, words the one-line error must hold)."""
    root = tmp_path_factory.mktemp("checkpoints")
    data = _tiny(root / "good.pth").read_bytes()
    files = {}
    for name, content, words in (("empty", b"", "the file is empty"),
                                 ("truncated", data[: len(data) // 3], "truncated or corrupt checkpoint"),
                                 ("random", np.random.default_rng(1).bytes(3000), "not a PyTorch checkpoint")):
        (root / f"{name}.pth").write_bytes(content)
        files[name] = (root / f"{name}.pth", words)
    files["nan"] = (_tiny(root / "nan.pth", lambda net: next(net.parameters()).view(-1)[:3].fill_(float("nan"))),
                    "weight tensors hold NaN or infinite values")
    from munch import Munch

    torch.save({"model": torch.load(root / "good.pth", weights_only=True)["model"], "config": Munch(a=1)},
               root / "pickled.pth")
    files["pickled"] = (root / "pickled.pth", "stores pickled Python objects")
    import os
    import struct
    import zipfile

    # a global from a module torch blocks outright ("unsupported GLOBAL ... is blocked"): still a pickle
    torch.save({"model": torch.load(root / "good.pth", weights_only=True)["model"], "hook": os.system},
               root / "blocked.pth")
    files["blocked"] = (root / "blocked.pth", "stores pickled Python objects")
    with zipfile.ZipFile(root / "good.pth") as archive:  # one flipped bit inside the largest tensor
        largest = max(archive.infolist(), key=lambda info: info.file_size)
    damaged = bytearray(data)
    name_length, extra_length = struct.unpack("<HH", data[largest.header_offset + 26:largest.header_offset + 30])
    damaged[largest.header_offset + 30 + name_length + extra_length + largest.file_size // 2] ^= 0x01
    (root / "crc.pth").write_bytes(bytes(damaged))
    files["crc"] = (root / "crc.pth", f"entry '{largest.filename}' fails its CRC check")
    return files


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("kind", ["empty", "truncated", "random", "nan", "pickled", "blocked", "crc"])
def test_test_py_refuses_bad_checkpoints_in_one_line(checkpoints, kind, tmp_path, capsys):
    import test as test_script

    path, words = checkpoints[kind]
    code = test_script.main(["--checkpoint", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    err = _one_line_error(capsys)
    assert code == 2 and str(path) in err and words in err
    assert ("--allow-pickle" in err) == (kind in ("pickled", "blocked"))  # told apart from files that are broken
    assert not (tmp_path / "out").exists()


def test_test_py_refuses_an_unwritable_output_before_evaluating(synthetic_dataset, checkpoints, tmp_path, capsys,
                                                                 monkeypatch):
    import test as test_script

    _, table = synthetic_dataset
    from engine import evaluator

    monkeypatch.setattr(evaluator, "evaluate", lambda *a, **k: pytest.fail("evaluated before checking the output"))
    blocker = tmp_path / "results"
    blocker.write_text("a file where the output folder should go")
    code = test_script.main(["--checkpoint", str(checkpoints["nan"][0].with_name("good.pth")), "--data", str(table),
                             "--out", str(blocker / "run"), "--device", "cpu", "--no-progress"])
    err = _one_line_error(capsys)
    assert code == 2 and f"output folder {blocker / 'run'} is not writable" in err


def _demo_cli():
    spec = importlib.util.spec_from_file_location("demo_cli", REPO_ROOT / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kind", ["empty", "truncated", "random", "nan", "pickled", "blocked", "crc"])
def test_demo_refuses_bad_checkpoints_before_serving(checkpoints, kind, capsys, monkeypatch):
    import demo.server

    monkeypatch.setattr(demo.server, "create_server", lambda *a, **k: pytest.fail("started a server"))
    path, words = checkpoints[kind]
    code = _demo_cli().main(["--checkpoint", str(path), "--port", "0", "--threads", "1"])
    err = _one_line_error(capsys)
    assert code == 2 and str(path) in err and words in err


def test_demo_refuses_weights_whose_warm_up_prediction_is_not_finite(tmp_path, capsys, monkeypatch):
    """Finite but absurd weights: the file passes every check, the network's output does not."""
    import demo.server

    def blow_up(net):
        for module in net.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.mul_(1e12)

    path = _tiny(tmp_path / "absurd.pth", blow_up)
    monkeypatch.setattr(demo.server, "create_server", lambda *a, **k: pytest.fail("started a server"))
    code = _demo_cli().main(["--checkpoint", str(path), "--port", "0", "--threads", "1"])
    err = _one_line_error(capsys)
    assert code == 2 and "the model predicts NaN or infinite heatmaps on a blank test image" in err and str(path) in err


def test_select_morph_pairs_names_bad_labels_outputs_and_configs(synthetic_dataset, tmp_path, capsys):
    import select_morph_pairs

    _, table = synthetic_dataset
    latin1 = tmp_path / "labels.json"
    latin1.write_bytes(b"[\xe9]")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    duplicated = tmp_path / "dup.yaml"
    duplicated.write_text((REPO_ROOT / "config/quick.yaml").read_text() + "Train:\n  epoch: 3\n")
    cases = [
        (["--labels", str(tmp_path / "none")], f"--labels {tmp_path / 'none'}: no such folder or file"),
        (["--labels", str(latin1)], f"--labels {latin1}: 'utf-8' codec can't decode byte 0xe9"),
        (["--labels", str(table / "train.json"), "--out", str(blocker / "pairs.json")],
         f"output folder {blocker} is not writable"),
        (["--labels", str(table / "train.json"), "--config", str(duplicated)], "duplicate key 'Train'"),
    ]
    for args, words in cases:
        assert select_morph_pairs.main(args + ["--no-progress"]) == 2
        assert words in _one_line_error(capsys)


def test_test_py_and_train_py_name_a_missing_table_and_an_unwritable_save_folder(checkpoints, tmp_path, capsys):
    import test as test_script
    import train

    good = checkpoints["nan"][0].with_name("good.pth")
    assert test_script.main(["--checkpoint", str(good), "--data", str(tmp_path / "none"), "--out",
                             str(tmp_path / "out"), "--device", "cpu", "--no-progress"]) == 2
    assert f"table '{tmp_path / 'none' / 'test.json'}' not found" in _one_line_error(capsys)
    blocker = tmp_path / "save"
    blocker.write_text("x")
    assert train.main(["--config", "config/quick.yaml", "--save-dir", str(blocker), "--no-progress"]) == 2
    assert f"output folder {blocker / 'quick'} is not writable" in _one_line_error(capsys)


def test_a_damaged_checkpoint_loads_in_torch_but_is_refused(checkpoints):
    """The premise of the "crc" case: torch.load itself does not check the zip CRCs."""
    from model import read_checkpoint
    from model.weights import CheckpointError

    path, words = checkpoints["crc"]
    torch.load(path, weights_only=True)
    with pytest.raises(CheckpointError, match=words):
        read_checkpoint(path)


@pytest.mark.parametrize("flag, value, words", [("--max-clicks", "-1", "--max-clicks must be >= 0, got -1"),
                                                ("--batch-size", "0", "--batch-size must be >= 1, got 0"),
                                                ("--table-clicks", "-2", "--table-clicks must be >= 0, got -2"),
                                                ("--visualize", "-1", "--visualize must be >= 0, got -1")])
def test_test_py_refuses_negative_counts_in_one_line(checkpoints, flag, value, words, tmp_path, capsys):
    import test as test_script

    good = checkpoints["nan"][0].with_name("good.pth")
    code = test_script.main(["--checkpoint", str(good), "--out", str(tmp_path / "out"), flag, value, "--no-progress"])
    assert code == 2 and words in _one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_test_py_visualizes_with_zero_clicks(synthetic_dataset, checkpoints, tmp_path, capsys):
    import test as test_script

    _, table = synthetic_dataset
    good = checkpoints["nan"][0].with_name("good.pth")
    code = test_script.main(["--checkpoint", str(good), "--data", str(table), "--out", str(tmp_path / "out"),
                             "--max-clicks", "0", "--visualize", "1", "--device", "cpu", "--no-progress"])
    assert code == 0
    assert len(list((tmp_path / "out" / "visualize").glob("*.png"))) == 1


@pytest.mark.parametrize("args, words", [(["--size", "100000", "100000"],
                                          "--size must be at most 4096 px a side, got 100000 100000"),
                                         (["--seed", "-1"], "--seed must be in [0, 4294967295], got -1")])
def test_data_preprocessing_refuses_huge_sizes_and_bad_seeds_before_reading(synthetic_tree, args, words, tmp_path,
                                                                            capsys, monkeypatch):
    import data_preprocessing

    monkeypatch.setattr(data_preprocessing, "preprocess", lambda *a, **k: pytest.fail("started preprocessing"))
    code = data_preprocessing.main(["--source", str(synthetic_tree), "--target", str(tmp_path / "out"),
                                    "--no-progress", *args])
    assert code == 2 and words in _one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_preprocess_bounds_the_image_size_and_the_seed(synthetic_tree, tmp_path):
    from dataset.preprocess import preprocess

    with pytest.raises(ValueError, match="at most 4096 px a side"):
        preprocess(synthetic_tree, tmp_path, size_row_col=(100000, 100000))
    with pytest.raises(ValueError, match=r"seed must be in \[0, 4294967295\], got -1"):
        preprocess(synthetic_tree, tmp_path, seed=-1)
    assert not any(tmp_path.iterdir())


def _copy_data(table, tmp_path):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(table, copy)
    return copy


def test_a_truncated_array_is_refused_by_test_py_before_evaluating(synthetic_dataset, checkpoints, tmp_path, capsys):
    import json

    import test as test_script

    _, table = synthetic_dataset
    data = _copy_data(table, tmp_path)
    victim = data / json.loads((data / "test.json").read_text())[-1]["image"]
    victim.write_bytes(victim.read_bytes()[:5000])
    good = checkpoints["nan"][0].with_name("good.pth")
    code = test_script.main(["--checkpoint", str(good), "--data", str(data), "--out", str(tmp_path / "out"),
                             "--device", "cpu", "--no-progress"])
    err = _one_line_error(capsys)
    assert code == 2 and f"{victim}: truncated .npy array (5000 bytes" in err and str(data / "test.json") in err
    assert not (tmp_path / "out").exists()
