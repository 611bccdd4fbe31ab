"""test.py's evaluation job (engine/evaluator.py): where a checkpoint was trained does not decide where it runs."""
import json

import pytest
import torch

import util
from conftest import tiny_overrides
from model import build_model, save_checkpoint


@pytest.fixture
def cuda_trained_checkpoint(synthetic_dataset, tmp_path):
    """A checkpoint as a GPU run stores it: its config says MISC.device: cuda."""
    _, table = synthetic_dataset
    config = util.load_config("config/quick.yaml", tiny_overrides(table) + ["MISC.device=cuda"])
    torch.manual_seed(0)
    path = tmp_path / "gpu_run" / "best.pth"
    path.parent.mkdir()
    save_checkpoint(path, build_model(config), epoch=3, config=config)
    return table, path


def test_a_checkpoint_trained_on_cuda_is_evaluated_on_a_machine_without_it(cuda_trained_checkpoint, tmp_path,
                                                                           capsys):
    import test as test_script

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    table, path = cuda_trained_checkpoint
    out = tmp_path / "out"
    assert test_script.main(["--checkpoint", str(path), "--data", str(table), "--max-clicks", "1", "--out", str(out),
                             "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "asks for device 'cuda' (MISC.device), but CUDA is not available here: running on CPU" in printed
    assert "(epoch 3)" in printed and "device cpu" in printed
    results = json.loads((out / "results.json").read_text())
    assert len(results["model"]["sargmax_mm_MRE"]) == 2 and results["checkpoint"] == str(path)


def test_an_explicit_cuda_device_is_refused_on_a_machine_without_it(cuda_trained_checkpoint, tmp_path, capsys):
    import test as test_script

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    table, path = cuda_trained_checkpoint
    assert test_script.main(["--checkpoint", str(path), "--data", str(table), "--device", "cuda",
                             "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert capsys.readouterr().err == "error: device 'cuda' requested but CUDA is not available\n"
    assert not (tmp_path / "out").exists()
