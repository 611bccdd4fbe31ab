"""Training on generated data: the loss falls, resume equals an uninterrupted run, DDP ranks agree."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import train
import util
import model
from engine import trainer
from conftest import REPO_ROOT, tiny_overrides


def _run(table_dir, save_dir, name, *extra, device="cpu"):
    # --device cpu: bit-identical resumes and gloo ranks are CPU facts, also on a machine with CUDA
    args = ["--config", "config/quick.yaml", "--name", name, "--no-progress", "--threads", "1"]
    args += ["--device", device] if device else []
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


def test_val_every_validates_on_its_epochs_and_after_the_last_one(synthetic_dataset, tmp_path):
    _, table = synthetic_dataset
    assert _run(table, tmp_path, "sparse", "--set", "Train.epoch=5", "--set", "Train.val_every=2") == 0
    metrics = _metrics(tmp_path / "sparse")
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4, 5]
    assert [m["epoch"] for m in metrics if "val/metric" in m] == [2, 4, 5]
    best = torch.load(tmp_path / "sparse/best.pth", map_location="cpu", weights_only=True)
    validated = {m["epoch"]: m["val/metric"] for m in metrics if "val/metric" in m}
    assert best["epoch"] == min(validated, key=validated.get)


def test_resume_after_interruption_matches_an_uninterrupted_run(synthetic_dataset, tmp_path):
    _, table = synthetic_dataset
    assert _run(table, tmp_path, "straight", "--set", "Train.epoch=3") == 0
    assert _run(table, tmp_path, "stopped", "--set", "Train.epoch=3", "--stop-after-epoch", "1") == 0
    assert "--stop-after-epoch 1; continue with --resume" in (tmp_path / "stopped/log.txt").read_text()
    assert _run(table, tmp_path, "stopped", "--resume", "--set", "Train.epoch=3", "--stop-after-epoch", "1") == 0
    assert len(_metrics(tmp_path / "stopped")) == 1  # already there: nothing more to train
    assert _run(table, tmp_path, "stopped", "--resume", "--set", "Train.epoch=3") == 0
    straight, resumed = _weights(tmp_path / "straight/last.pth"), _weights(tmp_path / "stopped/last.pth")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert [m["train/loss"] for m in _metrics(tmp_path / "straight")] == \
           [m["train/loss"] for m in _metrics(tmp_path / "stopped")]


def test_gradient_norm_is_logged_before_clipping(synthetic_dataset, tmp_path):
    _, table = synthetic_dataset
    one_batch = ("--set", "Train.max_batches_per_epoch=1")
    assert _run(table, tmp_path, "free", *one_batch) == 0
    assert _run(table, tmp_path, "clipped", *one_batch, "--set", "Train.grad_clip=0.001") == 0
    free, clipped = _metrics(tmp_path / "free"), _metrics(tmp_path / "clipped")
    for epoch in free + clipped:  # one step an epoch: its norm is the mean and the largest
        assert epoch["train/grad_norm"] == epoch["train/grad_norm_max"] > 0.01
    # same weights and batch at the first step: the clipped run logs the norm it clipped, not 0.001
    assert clipped[0]["train/grad_norm"] == pytest.approx(free[0]["train/grad_norm"], rel=1e-6)
    # and the clip acted: the second step starts from other weights
    assert clipped[1]["train/loss"] != free[1]["train/loss"]


def _tune_from_one_epoch(table, tmp_path, name, *overrides):
    """Train 'base' for one epoch, then a new run from its best weights; -> (start file, base, tuned,
    learnable parameter names)."""
    assert _run(table, tmp_path, "base", "--set", "Train.epoch=1") == 0
    start = tmp_path / "base/best.pth"
    sets = [item for override in overrides for item in ("--set", override)]
    assert _run(table, tmp_path, name, "--init-weights", str(start), "--set", "Train.epoch=1", *sets) == 0
    base, tuned = _weights(start), _weights(tmp_path / name / "last.pth")
    params = [k for k in base if "running_" not in k and "num_batches_tracked" not in k]
    return start, base, tuned, params


def test_init_weights_starts_a_new_run_from_a_checkpoint(synthetic_dataset, tmp_path, capsys):
    _, table = synthetic_dataset
    # learning rate 0: the parameters must stay exactly those of the file they came from
    start, base, tuned, params = _tune_from_one_epoch(table, tmp_path, "tuned", "Optimizer.lr=0")
    assert params and all(torch.equal(base[k], tuned[k]) for k in params)
    assert f"initialised the model from {start}" in (tmp_path / "tuned/log.txt").read_text()
    capsys.readouterr()
    assert _run(table, tmp_path, "nofile", "--init-weights", str(tmp_path / "none.pth")) == 2
    assert capsys.readouterr().err == f"error: checkpoint not found: {tmp_path / 'none.pth'}\n"
    assert not (tmp_path / "nofile").exists()  # refused before the run folder was made


def test_click_lr_mult_scales_only_the_click_pathway(synthetic_dataset, tmp_path):
    _, table = synthetic_dataset
    # factor 0: the click encoder and the gating block stay as loaded while the rest learns
    _, base, tuned, params = _tune_from_one_epoch(table, tmp_path, "frozen_clicks", "Optimizer.click_lr_mult=0")
    click = [k for k in params if k.startswith(trainer.CLICK_PATHWAY_PREFIXES)]
    assert any(k.startswith("hintmap_encoder.") for k in click) and any("HintEncSENet" in k for k in click)
    assert all(torch.equal(base[k], tuned[k]) for k in click)
    assert not all(torch.equal(base[k], tuned[k]) for k in params if k not in click)
    groups = torch.load(tmp_path / "frozen_clicks/last.pth", map_location="cpu",
                        weights_only=True)["optimizer"]["param_groups"]
    assert [g["lr"] for g in groups] == [0.002, 0.0] and len(groups[1]["params"]) == len(click)


def test_existing_run_is_not_overwritten_without_resume(synthetic_dataset, tmp_path):
    _, table = synthetic_dataset
    assert _run(table, tmp_path, "once", "--set", "Train.epoch=1") == 0
    assert _run(table, tmp_path, "once") == 2


def test_non_finite_loss_stops_with_epoch_and_batch_and_keeps_last_good_checkpoint(synthetic_dataset, tmp_path,
                                                                                  monkeypatch):
    _, table = synthetic_dataset
    assert _run(table, tmp_path, "nan", "--set", "Train.epoch=1") == 0
    good = _weights(tmp_path / "nan/last.pth")
    real_step = trainer.training_step

    def poisoned(*args, **kwargs):
        terms = real_step(*args, **kwargs)
        terms.total = terms.total * float("nan")
        return terms

    monkeypatch.setattr(trainer, "training_step", poisoned)
    assert _run(table, tmp_path, "nan", "--resume", "--set", "Train.epoch=2") == 2
    assert "at epoch 2, batch 0" in (tmp_path / "nan/log.txt").read_text()
    after = _weights(tmp_path / "nan/last.pth")
    assert all(torch.equal(good[k], after[k]) for k in good)


def test_two_gloo_processes_agree_and_their_checkpoint_evaluates(synthetic_dataset, tmp_path):
    _, table = synthetic_dataset
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "train.py", "--config", "config/quick.yaml", "--name", "ddp", "--no-progress", "--threads", "1", "--device", "cpu",
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


def _strict_json_lines(path):
    def refuse(token):
        raise ValueError(f"{path}: {token} is not JSON")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def test_weights_that_become_non_finite_stop_the_run_before_any_checkpoint(synthetic_dataset, tmp_path, monkeypatch):
    _, table = synthetic_dataset
    assert _run(table, tmp_path, "w", "--set", "Train.epoch=1") == 0
    before = {name: (tmp_path / "w" / name).read_bytes() for name in ("best.pth", "last.pth")}
    real_step = torch.optim.Adam.step
    steps = []

    def step_then_poison(self, *args, **kwargs):  # the second step of the resumed run leaves a NaN weight
        out = real_step(self, *args, **kwargs)
        steps.append(1)
        if len(steps) == 2:
            with torch.no_grad():
                self.param_groups[0]["params"][5].view(-1)[0] = float("nan")
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", step_then_poison)
    assert _run(table, tmp_path, "w", "--resume", "--set", "Train.epoch=3") == 2
    log = (tmp_path / "w/log.txt").read_text()
    assert "became NaN or infinite after the step of epoch 2, batch 1" in log
    assert "best.pth (epoch 1) and last.pth (epoch 1) are unchanged" in log
    assert all((tmp_path / "w" / name).read_bytes() == data for name, data in before.items())
    assert [row["epoch"] for row in _strict_json_lines(tmp_path / "w/metrics.jsonl")] == [1]


def test_nan_heatmaps_at_validation_are_never_best_and_write_nothing(synthetic_dataset, tmp_path, capsys):
    """An absurd learning rate: the weights stay finite after one step but the heatmaps are NaN; their
    hard argmax would give a finite MRE, so validation must look at the heatmaps themselves."""
    _, table = synthetic_dataset
    code = _run(table, tmp_path, "lr", "--set", "Optimizer.lr=1e30", "--set", "Train.max_batches_per_epoch=1")
    assert code == 2
    log = (tmp_path / "lr/log.txt").read_text()
    assert "after epoch 1: the model predicts NaN or infinite heatmaps on evaluation batch 0" in log
    assert "no checkpoint was written" in log and "*best*" not in log
    assert not (tmp_path / "lr/best.pth").exists() and not (tmp_path / "lr/last.pth").exists()
    assert not (tmp_path / "lr/metrics.jsonl").exists()


def test_non_finite_learning_rate_is_refused_in_one_line(synthetic_dataset, tmp_path, capsys):
    _, table = synthetic_dataset
    assert _run(table, tmp_path, "inf", "--set", "Optimizer.lr=.inf") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'Optimizer.lr' must be a finite number, got inf (--set Optimizer.lr=.inf)" in err
    assert not (tmp_path / "inf").exists()


def test_metrics_file_stays_json_when_a_value_is_not_finite(tmp_path):
    from engine.experiment import Experiment

    run = Experiment(tmp_path, "m", tensorboard=False)
    run.record_metrics(1, {"val/metric": float("inf"), "val/click_gain": float("nan"), "loss": 0.5})
    assert _strict_json_lines(tmp_path / "m/metrics.jsonl") == [
        {"epoch": 1, "val/metric": None, "val/click_gain": None, "loss": 0.5}]


def test_misc_device_of_the_config_is_a_preference_and_device_flag_an_order(synthetic_dataset, tmp_path, capsys):
    _, table = synthetic_dataset
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    # a config (e.g. one stored by a GPU run) that names CUDA trains on this CPU machine, and says so
    assert _run(table, tmp_path, "dev", "--set", "MISC.device=cuda", "--set", "Train.epoch=1", device=None) == 0
    out = capsys.readouterr().out
    assert "asks for device 'cuda' (MISC.device), but CUDA is not available here: running on CPU" in out
    assert "device cpu" in out
    assert _run(table, tmp_path, "dev", "--resume", "--set", "Train.epoch=2", device=None) == 0  # and resumes here
    # the person's own --device cuda is refused, before a run folder is made
    assert _run(table, tmp_path, "dev2", "--set", "Train.epoch=1", device="cuda") == 2
    assert "device 'cuda' requested but CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "dev2").exists()


def test_weight_average_is_validated_saved_as_best_and_resumed_exactly(synthetic_dataset, tmp_path):
    _, table = synthetic_dataset
    ema = ("--set", "Train.epoch=3", "--set", "Train.ema_decay=0.9", "--set", "Train.val_every=5")
    assert _run(table, tmp_path, "straight", *ema) == 0  # validates only after epoch 3: best.pth is epoch 3
    assert _run(table, tmp_path, "stopped", *ema, "--stop-after-epoch", "2") == 0
    assert _run(table, tmp_path, "stopped", "--resume", *ema) == 0
    straight = torch.load(tmp_path / "straight/last.pth", map_location="cpu", weights_only=True)
    resumed = torch.load(tmp_path / "stopped/last.pth", map_location="cpu", weights_only=True)
    average = straight["weight_average"]["model"]
    assert straight["weight_average"]["steps"] == resumed["weight_average"]["steps"] == 6  # 3 epochs x 2 batches
    for key, value in average.items():
        assert torch.equal(value, resumed["weight_average"]["model"][key]), key
    best = torch.load(tmp_path / "straight/best.pth", map_location="cpu", weights_only=True)
    assert best["epoch"] == 3
    assert all(torch.equal(best["model"][k], average[k]) for k in average)  # the average, not the trained weights
    assert any(not torch.equal(average[k], straight["model"][k]) for k in average if average[k].is_floating_point())
    validated = [{m["epoch"]: m["val/metric"] for m in _metrics(tmp_path / run) if "val/metric" in m}
                 for run in ("straight", "stopped")]
    assert validated[0][3] == validated[1][3]


def test_resuming_a_plain_run_with_a_weight_average_is_refused(synthetic_dataset, tmp_path, capsys):
    _, table = synthetic_dataset
    assert _run(table, tmp_path, "plain", "--set", "Train.epoch=2", "--stop-after-epoch", "1") == 0
    assert _run(table, tmp_path, "plain", "--resume", "--set", "Train.ema_decay=0.9") == 2
    assert "holds no weight average" in capsys.readouterr().err


def test_print_config_prints_the_resolved_config_and_trains_nothing(tmp_path, capsys):
    (tmp_path / "aasce_cpu_fast").mkdir()
    (tmp_path / "aasce_cpu_fast" / "last.pth").write_bytes(b"")  # an existing run does not block printing
    args = ["--config", "config/aasce_cpu_fast.yaml", "--set", "Train.seed=4", "--save-dir", str(tmp_path)]
    assert train.main(args + ["--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = util.load_config("config/aasce_cpu_fast.yaml", ["Train.seed=4"])
    assert util.config_from_dict(printed, "printed").toDict() == expected.toDict()
    assert printed["Optimizer"]["click_lr_mult"] == 3.0 and printed["Train"]["batch_size"] == 4  # own and BASE's
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["aasce_cpu_fast", "last.pth"]


def test_train_sh_without_a_config_trains_the_paper_configuration(capsys):
    """`bash train.sh` is the official entry point: with no --config it trains config/spineweb_ours.yaml."""
    env = {**os.environ, "VENV": str(Path(sys.executable).parents[1])}
    done = subprocess.run(["bash", "train.sh", "--print-config"], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = util.config_from_dict(yaml.safe_load(done.stdout), "printed")
    assert printed.toDict() == util.load_config("config/spineweb_ours.yaml").toDict()
    assert printed.Model.width == 32 and list(printed.Dataset.image_size) == [512, 256]


def test_torchrun_with_cuda_asked_but_missing_is_refused_before_any_process_group(monkeypatch):
    from misc.errors import BadInput

    monkeypatch.setenv("RANK", "0"), monkeypatch.setenv("WORLD_SIZE", "2"), monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BadInput, match="--device cuda under torchrun, but CUDA is not available: pass --device cpu"):
        trainer.setup_distributed("cuda", explicit=True)
    assert not torch.distributed.is_initialized()


def test_torchrun_with_more_processes_than_gpus_is_refused_in_one_line(monkeypatch):
    from misc.errors import BadInput

    monkeypatch.setenv("RANK", "2"), monkeypatch.setenv("WORLD_SIZE", "3"), monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(BadInput, match=r"LOCAL_RANK 2, but this machine has 2 CUDA device\(s\): start at most 2 "
                                       r"processes per node \(--nproc_per_node 2\)"):
        trainer.setup_distributed("auto", explicit=False)
    assert not torch.distributed.is_initialized()


def test_resume_restores_the_mixed_precision_scaler(tmp_path):
    """--amp keeps its loss scale across a resume (a fresh scaler would start again at 65536 and skip steps)."""
    config = util.load_config("config/quick.yaml", ["Model.width=8", "Model.ocr_width=16"])
    net = torch.nn.Linear(2, 2)
    optimizer, scheduler = trainer.build_optimizer(net, config)
    saved = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=7)
    model.save_checkpoint(tmp_path / "last.pth", net, optimizer=optimizer.state_dict(), scheduler={},
                          train_state={"epoch": 3}, grad_scaler=saved.state_dict())
    plan = trainer.RunPlan(config, tmp_path.parent, tmp_path.name, model.read_checkpoint(tmp_path / "last.pth"))
    scaler = torch.amp.GradScaler("cpu")
    state = trainer._restore(plan, net, optimizer, None, scaler, amp=True, device=torch.device("cpu"))
    assert state == {"epoch": 3}
    assert scaler.get_scale() == 1024.0 and scaler.get_growth_interval() == 7


def test_resume_from_a_file_without_optimizer_state_names_the_file(tmp_path):
    from misc.errors import BadInput

    config = util.load_config("config/quick.yaml")
    net = torch.nn.Linear(2, 2)
    optimizer, _ = trainer.build_optimizer(net, config)
    model.save_checkpoint(tmp_path / "last.pth", net, epoch=4)  # e.g. an exported model copied to last.pth
    plan = trainer.RunPlan(config, tmp_path.parent, tmp_path.name, model.read_checkpoint(tmp_path / "last.pth"))
    with pytest.raises(BadInput, match=f"{tmp_path / 'last.pth'} holds no optimizer state"):
        trainer._restore(plan, net, optimizer, None, torch.amp.GradScaler("cpu"), amp=False, device="cpu")


def test_training_on_every_labelled_image_keeps_the_last_epoch_by_a_rule_fixed_beforehand(synthetic_dataset,
                                                                                           tmp_path):
    _, table = synthetic_dataset
    counts = {split: len(json.loads((table / f"{split}.json").read_text())) for split in ("train", "val")}
    args = ("--set", "Train.train_splits=[train,val]", "--set", "Train.checkpoint=last", "--set", "Train.epoch=3",
            "--set", "Train.patience=0", "--set", "Train.val_every=1")
    assert _run(table, tmp_path, "all", *args) == 0
    log = (tmp_path / "all/log.txt").read_text()
    assert f"{counts['train'] + counts['val']} train+val / {counts['val']} val images" in log
    assert "best.pth holds epoch 3" in log and "early stop" not in log  # patience 0 stops nothing
    best = torch.load(tmp_path / "all/best.pth", map_location="cpu", weights_only=True)
    last = torch.load(tmp_path / "all/last.pth", map_location="cpu", weights_only=True)
    assert best["epoch"] == 3 and all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
    assert len(_metrics(tmp_path / "all")) == 3


def test_choosing_best_pth_on_trained_images_is_refused(synthetic_dataset, tmp_path, capsys):
    _, table = synthetic_dataset
    assert _run(table, tmp_path, "seen", "--set", "Train.train_splits=[train,val]") == 2
    assert "trains on the validation images, so 'best' would choose best.pth on images it has seen" in \
        capsys.readouterr().err
    assert not (tmp_path / "seen").exists()


@pytest.mark.parametrize("setting, words", [
    ("Optimizer.lr=1e38", "'Optimizer.lr' must be <= 1e+30, got 1e+38 (--set Optimizer.lr=1e38)"),
    ("Optimizer.weight_decay=1e39", "'Optimizer.weight_decay' must be <= 1e+30, got 1e+39"),
    ("Optimizer.click_lr_mult=1e33", "Optimizer.lr (0.002) times Optimizer.click_lr_mult (1e+33) must be <= 1e+30"),
    ("Dataset.image_size=[100000,100000]", "'Dataset.image_size' must be <= 4096, got [100000, 100000]"),
    ("Train.seed=4294967296", "'Train.seed' must be <= 4294967295, got 4294967296 (--set Train.seed=4294967296)"),
    ("Train.seed=-1", "'Train.seed' must be >= 0, got -1 (--set Train.seed=-1)"),
    ("Morph.pairs=/nonexistent.json", "Morph.pairs: morphology pairs '/nonexistent.json': not a known name"),
    ("Dataset.num_keypoint=5", "has points of shape (68, 2), but Dataset.num_keypoint is 5"),
])
def test_settings_that_cannot_train_are_refused_before_the_run_folder_is_made(synthetic_dataset, tmp_path, capsys,
                                                                              setting, words):
    _, table = synthetic_dataset
    assert _run(table, tmp_path, "bad", "--set", setting) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "bad").exists()


def test_malformed_morphology_pairs_are_refused_naming_the_key_and_file(synthetic_dataset, tmp_path, capsys):
    _, table = synthetic_dataset
    for name, text, words in (("broken.json", "[[1, 2]", "not valid JSON"),
                              ("far.json", "[[[0, 99]], []]", "")):
        (tmp_path / name).write_text(text)
        assert _run(table, tmp_path, "bad", "--set", f"Morph.pairs={tmp_path / name}") == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: Morph.pairs: {tmp_path / name}: {words}") and err.count("\n") == 1, err
        assert not (tmp_path / "bad").exists()


def test_negative_threads_are_refused_in_one_line(synthetic_dataset, tmp_path, capsys):
    _, table = synthetic_dataset
    assert _run(table, tmp_path, "bad", "--threads", "-1") == 2
    assert capsys.readouterr().err == "error: --threads must be >= 1, got -1\n"
    assert not (tmp_path / "bad").exists()


def test_a_truncated_array_is_refused_before_training(synthetic_dataset, tmp_path, capsys):
    import shutil

    _, table = synthetic_dataset
    data = tmp_path / "data"
    shutil.copytree(table, data)
    victim = data / json.loads((data / "train.json").read_text())[3]["image"]
    victim.write_bytes(victim.read_bytes()[:-10])
    assert _run(data, tmp_path, "bad") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {victim}: truncated .npy array") and err.count("\n") == 1, err
    assert not (tmp_path / "bad").exists()


def test_init_weights_refuses_a_damaged_checkpoint(synthetic_dataset, tmp_path, capsys):
    import struct
    import zipfile

    _, table = synthetic_dataset
    assert _run(table, tmp_path, "first", "--set", "Train.epoch=1") == 0
    data = bytearray((tmp_path / "first/best.pth").read_bytes())
    with zipfile.ZipFile(tmp_path / "first/best.pth") as archive:
        largest = max(archive.infolist(), key=lambda info: info.file_size)
    name_length, extra_length = struct.unpack("<HH", data[largest.header_offset + 26:largest.header_offset + 30])
    data[largest.header_offset + 30 + name_length + extra_length + largest.file_size // 2] ^= 0x01  # in a tensor
    (tmp_path / "damaged.pth").write_bytes(bytes(data))
    capsys.readouterr()
    assert _run(table, tmp_path, "second", "--init-weights", str(tmp_path / "damaged.pth")) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'damaged.pth'}: corrupt checkpoint: entry '{largest.filename}' fails its CRC check" in err
    assert not (tmp_path / "second").exists()


def test_resume_refuses_overrides_that_the_restored_state_would_ignore(synthetic_dataset, tmp_path, capsys):
    """The optimizer in last.pth holds its learning rate: a new one would be written to config.yaml and
    silently not used. Settings read afresh each epoch are used, and the log says so."""
    _, table = synthetic_dataset
    assert _run(table, tmp_path, "r", "--set", "Train.epoch=3", "--stop-after-epoch", "1") == 0
    before = {name: (tmp_path / "r" / name).read_bytes() for name in ("config.yaml", "last.pth", "metrics.jsonl")}
    capsys.readouterr()
    assert _run(table, tmp_path, "r", "--resume", "--set", "Train.epoch=3", "--set", "Optimizer.lr=0.001") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --resume: Optimizer.lr (the run's 0.002, --set 0.001) cannot change in a run")
    assert err.count("\n") == 1 and f"--init-weights {tmp_path / 'r' / 'last.pth'}" in err
    assert all((tmp_path / "r" / name).read_bytes() == data for name, data in before.items())
    assert _run(table, tmp_path, "r", "--resume", "--set", "Train.epoch=3", "--set", "Train.patience=50",
                "--stop-after-epoch", "2") == 0
    assert "resumed with changed settings (used from now on): Train.patience 10 -> 50" in \
        (tmp_path / "r/log.txt").read_text()
    assert yaml.safe_load((tmp_path / "r/config.yaml").read_text())["Train"]["patience"] == 50


def test_resume_refuses_a_new_length_of_a_cosine_schedule(synthetic_dataset, tmp_path, capsys):
    _, table = synthetic_dataset
    cosine = ("--set", "Optimizer.scheduler=cosine")
    assert _run(table, tmp_path, "c", *cosine, "--stop-after-epoch", "1") == 0
    assert _run(table, tmp_path, "c", "--resume", *cosine, "--set", "Train.epoch=4") == 2
    assert "error: --resume: Train.epoch (the run's 2, --set 4) cannot change in a run" in capsys.readouterr().err


def test_a_run_killed_between_its_metrics_row_and_last_pth_resumes_without_repeating_the_epoch(
        synthetic_dataset, tmp_path, monkeypatch):
    import tempfile

    _, table = synthetic_dataset
    assert _run(table, tmp_path, "straight", "--set", "Train.epoch=3") == 0
    real_save = trainer.save_checkpoint

    def killed_while_writing_last(path, net, **extra):
        if Path(path).name == "last.pth" and extra["epoch"] == 2:
            tempfile.mkstemp(prefix=".last.pth.", suffix=".tmp", dir=Path(path).parent)  # what a kill leaves
            raise KeyboardInterrupt
        return real_save(path, net, **extra)

    monkeypatch.setattr(trainer, "save_checkpoint", killed_while_writing_last)
    with pytest.raises(KeyboardInterrupt):
        _run(table, tmp_path, "killed", "--set", "Train.epoch=3")
    assert [m["epoch"] for m in _metrics(tmp_path / "killed")] == [1, 2]  # the row of epoch 2, not its last.pth
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    assert _run(table, tmp_path, "killed", "--resume", "--set", "Train.epoch=3") == 0
    assert [m["epoch"] for m in _metrics(tmp_path / "killed")] == [1, 2, 3]
    assert [m["train/loss"] for m in _metrics(tmp_path / "killed")] == \
           [m["train/loss"] for m in _metrics(tmp_path / "straight")]
    assert not list((tmp_path / "killed").glob(".*.tmp"))
    log = (tmp_path / "killed/log.txt").read_text()
    assert "dropped 1 row(s) after epoch 1 from metrics.jsonl" in log and "left by an interrupted write" in log


def _disk_with_free(monkeypatch, free_bytes):
    import collections
    import shutil

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * free_bytes, 9 * free_bytes, free_bytes))


def test_training_checks_free_space_for_its_checkpoints_not_a_fixed_64_mb(synthetic_dataset, tmp_path, capsys,
                                                                            monkeypatch):
    """The paper's network: last.pth (weights and Adam's moments) is about 380 MB, best.pth 127 MB."""
    _, table = synthetic_dataset
    _disk_with_free(monkeypatch, 65 * 2**20)  # above the 64 MB every output folder needs
    paper_net = ("--set", "Model.width=32", "--set", "Model.ocr_width=128", "--set", "Model.small=false")
    assert _run(table, tmp_path, "big", *paper_net) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: not enough free space in {tmp_path / 'big'} for the run's checkpoints: ") and \
        err.count("\n") == 1 and "65.0 MB free" in err, err
    assert float(err.split(": ")[2].split(" MB")[0]) > 500  # MB needed
    assert not (tmp_path / "big").exists()


def test_a_checkpoint_write_checks_free_space_for_its_own_size(tmp_path, monkeypatch):
    from misc.errors import BadInput
    from model.weights import checkpoint_size_estimate

    net = torch.nn.Linear(600, 600)
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 600)).sum().backward()
    optimizer.step()
    model.save_checkpoint(tmp_path / "last.pth", net, optimizer=optimizer.state_dict())
    written = (tmp_path / "last.pth").stat().st_size
    estimate = checkpoint_size_estimate({"model": net.state_dict(), "optimizer": optimizer.state_dict()})
    assert written <= estimate <= written + 2**20 + 256 * 10  # from above, by the fixed overhead at most
    before = (tmp_path / "last.pth").read_bytes()
    _disk_with_free(monkeypatch, estimate - 1)
    with pytest.raises(BadInput, match=f"not enough free space in {tmp_path} for last.pth"):
        model.save_checkpoint(tmp_path / "last.pth", net, optimizer=optimizer.state_dict())
    assert (tmp_path / "last.pth").read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.pth"]


def test_resume_refusals_leave_the_run_folder_untouched(synthetic_dataset, tmp_path, capsys):
    _, table = synthetic_dataset
    assert _run(table, tmp_path, "r", "--set", "Train.epoch=2", "--stop-after-epoch", "1") == 0

    def folder():
        return {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()}

    before = folder()
    assert _run(table, tmp_path, "r", "--resume", "--set", "MISC.TB=true", "--set", "Train.ema_decay=0.9") == 2
    assert "holds no weight average" in capsys.readouterr().err
    assert folder() == before
    last = torch.load(tmp_path / "r/last.pth", weights_only=True)
    torch.save({"model": last["model"], "epoch": 1, "config": last["config"]}, tmp_path / "r/last.pth")  # exported
    before = folder()
    assert _run(table, tmp_path, "r", "--resume", "--set", "MISC.TB=true") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --resume: {tmp_path / 'r/last.pth'} holds no optimizer state")
    assert err.count("\n") == 1
    assert folder() == before  # no TensorBoard folder, no log line


def test_localisation_epochs_train_without_clicks_on_unhidden_images_then_with_both(synthetic_dataset, tmp_path,
                                                                                    monkeypatch):
    _, table = synthetic_dataset
    real_step, real_set_epoch = trainer.training_step, trainer.KeypointDataset.set_epoch
    steps, epochs = [], []

    def recorded_step(net, batch, config, morph_pairs, rng, device, clicks=True):
        steps.append(clicks)
        return real_step(net, batch, config, morph_pairs, rng, device, clicks)

    def recorded_set_epoch(self, epoch, occlusion=True):
        epochs.append((epoch, occlusion))
        return real_set_epoch(self, epoch, occlusion)

    monkeypatch.setattr(trainer, "training_step", recorded_step)
    monkeypatch.setattr(trainer.KeypointDataset, "set_epoch", recorded_set_epoch)
    assert _run(table, tmp_path, "warm", "--set", "Train.epoch=3", "--set", "Train.localisation_epochs=2",
                "--set", "Dataset.aug.occlusion_p=0.7", "--set", "Train.max_batches_per_epoch=2") == 0
    assert epochs == [(1, False), (2, False), (3, True)]
    assert steps == [False] * 4 + [True] * 2
