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
    return files


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("kind", ["empty", "truncated", "random", "nan", "pickled"])
def test_test_py_refuses_bad_checkpoints_in_one_line(checkpoints, kind, tmp_path, capsys):
    import test as test_script

    path, words = checkpoints[kind]
    code = test_script.main(["--checkpoint", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    err = _one_line_error(capsys)
    assert code == 2 and str(path) in err and words in err
    assert ("--allow-pickle" in err) == (kind == "pickled")  # told apart from files that are broken
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


@pytest.mark.parametrize("kind", ["empty", "truncated", "random", "nan", "pickled"])
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
