"""Training on generated data: the loss falls, resume equals an uninterrupted run, DDP ranks agree."""
import json
import os
import subprocess
import sys

import pytest
import torch

import train
from conftest import REPO_ROOT, tiny_overrides


def _run(table_dir, save_dir, name, *extra):
    args = ["--config", "config/quick.yaml", "--name", name, "--no-progress", "--threads", "1"]
    for item in tiny_overrides(table_dir, save_dir):
        args += ["--set", item]
    return train.main(args + list(extra))


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_tiny_config_learns_and_writes_a_complete_run_folder(synthetic_dataset, tmp_path):
    _, table = synthetic_dataset
    assert _run(table, tmp_path, "learn", "--set", "Train.epoch=4") == 0
    run_dir = tmp_path / "learn"
    losses = [m["train/loss"] for m in _metrics(run_dir)]
    assert len(losses) == 4 and losses[-1] < losses[0]
    for name in ("config.yaml", "log.txt", "best.pth", "last.pth"):
        assert (run_dir / name).is_file(), name
    last = torch.load(run_dir / "last.pth", map_location="cpu", weights_only=True)
    assert last["epoch"] == 4 and {"optimizer", "train_state", "config"} <= set(last)


def test_resume_after_interruption_matches_an_uninterrupted_run(synthetic_dataset, tmp_path):
    _, table = synthetic_dataset
    assert _run(table, tmp_path, "straight", "--set", "Train.epoch=3") == 0
    assert _run(table, tmp_path, "stopped", "--set", "Train.epoch=1") == 0   # "interrupted" after epoch 1
    assert _run(table, tmp_path, "stopped", "--resume", "--set", "Train.epoch=3") == 0
    straight, resumed = _weights(tmp_path / "straight/last.pth"), _weights(tmp_path / "stopped/last.pth")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert [m["train/loss"] for m in _metrics(tmp_path / "straight")] == \
           [m["train/loss"] for m in _metrics(tmp_path / "stopped")]


def test_init_weights_starts_a_new_run_from_a_checkpoint(synthetic_dataset, tmp_path):
    _, table = synthetic_dataset
    assert _run(table, tmp_path, "base", "--set", "Train.epoch=1") == 0
    start = tmp_path / "base/best.pth"
    # learning rate 0: the parameters must stay exactly those of the file they came from
    assert _run(table, tmp_path, "tuned", "--init-weights", str(start), "--set", "Train.epoch=1",
                "--set", "Optimizer.lr=0") == 0
    base, tuned = _weights(start), _weights(tmp_path / "tuned/last.pth")
    params = [k for k in base if "running_" not in k and "num_batches_tracked" not in k]
    assert params and all(torch.equal(base[k], tuned[k]) for k in params)
    assert f"initialised the model from {start}" in (tmp_path / "tuned/log.txt").read_text()
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        _run(table, tmp_path, "nofile", "--init-weights", str(tmp_path / "none.pth"))


def test_existing_run_is_not_overwritten_without_resume(synthetic_dataset, tmp_path):
    _, table = synthetic_dataset
    assert _run(table, tmp_path, "once", "--set", "Train.epoch=1") == 0
    with pytest.raises(SystemExit, match="--resume"):
        _run(table, tmp_path, "once")


def test_non_finite_loss_stops_with_epoch_and_batch_and_keeps_last_good_checkpoint(synthetic_dataset, tmp_path,
                                                                                  monkeypatch):
    _, table = synthetic_dataset
    assert _run(table, tmp_path, "nan", "--set", "Train.epoch=1") == 0
    good = _weights(tmp_path / "nan/last.pth")
    real_step = train.training_step

    def poisoned(*args, **kwargs):
        terms = real_step(*args, **kwargs)
        terms.total = terms.total * float("nan")
        return terms

    monkeypatch.setattr(train, "training_step", poisoned)
    assert _run(table, tmp_path, "nan", "--resume", "--set", "Train.epoch=2") == 2
    assert "at epoch 2, batch 0" in (tmp_path / "nan/log.txt").read_text()
    after = _weights(tmp_path / "nan/last.pth")
    assert all(torch.equal(good[k], after[k]) for k in good)


def test_two_gloo_processes_agree_and_their_checkpoint_evaluates(synthetic_dataset, tmp_path):
    _, table = synthetic_dataset
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "train.py", "--config", "config/quick.yaml", "--name", "ddp", "--no-progress", "--threads", "1",
           "--set", "Train.epoch=3", "--set", "Train.batch_size=2"]
    for item in tiny_overrides(table, tmp_path):
        if not item.startswith(("Train.epoch", "Train.batch_size")):
            cmd += ["--set", item]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (tmp_path / "ddp/log.txt").read_text()
    assert "world size 2" in log and "-> identical" in log
    losses = [m["train/loss"] for m in _metrics(tmp_path / "ddp")]
    assert losses[-1] < losses[0]
    import test as test_script
    out = tmp_path / "ddp_test"
    assert test_script.main(["--only_test_version", "ddp", "--save-dir", str(tmp_path), "--data", str(table),
                             "--max-clicks", "2", "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert len(results["model"]["sargmax_mm_MRE"]) == 3
