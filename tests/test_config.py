"""Config loading: every unknown, missing or mistyped key is an error naming the key and the file."""
from pathlib import Path

import pytest
import yaml

import util
from model.weights import read_checkpoint
from util import ConfigError

# every shipped config, so that a recipe that stops loading is caught before its hours of training
CONFIGS = sorted(str(p.relative_to(Path(__file__).resolve().parents[1]))
                 for p in (Path(__file__).resolve().parents[1] / "config").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS)
def test_shipped_configs_are_valid(path):
    config = util.load_config(path)
    assert config.Dataset.num_keypoint == 68 and len(config.Dataset.image_size) == 2


def test_paper_config_holds_the_paper_settings():
    c = util.load_config("config/spineweb_ours.yaml")
    assert c.Dataset.image_size == [512, 256] and c.Dataset.heatmap_std == 7.5
    assert (c.Model.width, c.Model.ocr_width, c.Model.small) == (32, 128, False)
    assert (c.Optimizer.optimizer, c.Optimizer.lr, c.Train.batch_size) == ("Adam", 0.001, 4)
    assert (c.Train.patience, c.Train.decision_metric, c.Train.max_click_rounds) == (50, "hargmax_mm_MRE", 2)
    assert (c.Morph.angle_lambda, c.Morph.distance_lambda, c.Morph.pairs) == (0.01, 0.01, "dataset16")


def _paper_tree():
    return yaml.safe_load(open("config/spineweb_ours.yaml"))


def _write(tmp_path, mutate):
    tree = _paper_tree()
    mutate(tree)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t["Train"].update(bogus=1), "unknown key 'Train.bogus'"),
    (lambda t: t["Model"].pop("width"), "missing key 'Model.width'"),
    (lambda t: t["Train"].update(batch_size="four"), "'Train.batch_size' must be int"),
    (lambda t: t["Dataset"].update(image_size=[512]), "'Dataset.image_size' must have 2 items"),
    (lambda t: t["Optimizer"].update(optimizer="SGD"), "'Optimizer.optimizer' must be one of"),
    (lambda t: t["Morph"].update(use="yes"), "'Morph.use' must be bool"),
    (lambda t: t.update(Extra={}), "unknown key 'Extra'"),
    (lambda t: t["Optimizer"].update(lr=float("nan")), "'Optimizer.lr' must be a finite number"),
    (lambda t: t["Optimizer"].update(lr=float("inf")), "'Optimizer.lr' must be a finite number"),
    (lambda t: t["Dataset"].update(heatmap_std=0.0), "'Dataset.heatmap_std' must be > 0"),
    (lambda t: t["Dataset"]["aug"].update(flip_p=1.5), "'Dataset.aug.flip_p' must be <= 1.0"),
    (lambda t: t["Dataset"]["aug"].update(occlusion_p=-0.1), "'Dataset.aug.occlusion_p' must be >= 0.0"),
    (lambda t: t["Dataset"].update(image_size=[0, 128]), "'Dataset.image_size' must be >= 8"),
    (lambda t: t["Dataset"]["aug"].update(scale_range=[0.9, float("inf")]), "'Dataset.aug.scale_range' must be a finite"),
    (lambda t: t["Model"].update(prev_heatmap="some"), "'Model.prev_heatmap' must be one of"),
    (lambda t: t["Train"].update(localisation_epochs=t["Train"]["epoch"]),
     "Train.localisation_epochs (5000) leaves no epoch with clicks: it must be below Train.epoch (5000)"),
])
def test_bad_file_names_key_and_file(tmp_path, mutate, message):
    path = _write(tmp_path, mutate)
    with pytest.raises(ConfigError) as info:
        util.load_config(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_overrides_are_parsed_as_yaml_and_validated():
    c = util.load_config("config/spineweb_ours.yaml", ["Train.batch_size=2", "Dataset.image_size=[256,128]",
                                                      "Optimizer.lr=1e-4"])
    assert c.Train.batch_size == 2 and c.Dataset.image_size == [256, 128] and c.Optimizer.lr == 1e-4
    with pytest.raises(ConfigError, match="unknown key 'Train.nope'"):
        util.load_config("config/spineweb_ours.yaml", ["Train.nope=3"])
    with pytest.raises(ConfigError, match="'Train.epoch' must be int"):
        util.load_config("config/spineweb_ours.yaml", ["Train.epoch=ten"])
    with pytest.raises(ConfigError, match="must look like"):
        util.load_config("config/spineweb_ours.yaml", ["Train.epoch"])


def test_int_given_for_float_is_accepted_as_float(tmp_path):
    path = _write(tmp_path, lambda t: t["Optimizer"].update(lr=1))
    assert isinstance(util.load_config(path).Optimizer.lr, float)


def test_missing_file_and_broken_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        util.load_config(tmp_path / "none.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("Train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        util.load_config(broken)


def test_switches_newer_than_the_paper_are_optional_with_defaults(tmp_path):
    """A config (or a checkpoint's stored config) written before a switch existed still loads."""
    def drop(t):
        t["Model"].pop("prev_heatmap", None)
        t["Dataset"]["aug"].pop("occlusion_p", None)
        t["Dataset"]["aug"].pop("occlusion_height", None)
        t["Train"].pop("min_click_rounds", None)
        t["Optimizer"].pop("click_lr_mult", None)
    c = util.load_config(_write(tmp_path, drop))
    assert c.Model.prev_heatmap == "clicked_at_test" and c.Dataset.aug.occlusion_p == 0.0
    assert c.Dataset.aug.occlusion_height == [0.1, 0.3]
    assert c.Train.min_click_rounds == 0 and c.Optimizer.click_lr_mult == 1.0


@pytest.mark.parametrize("only_clicked, in_training, rule", [
    (True, None, "clicked_at_test"), (True, "full", "clicked_at_test"), (True, "clicked", "clicked"),
    (False, "full", "full")])
def test_old_configs_load_with_the_keys_they_had(tmp_path, only_clicked, in_training, rule):
    """Configs written before Model.prev_heatmap (and with keys nothing reads) load and mean the same."""
    def old_style(t):
        t["Model"].pop("prev_heatmap")
        t["Model"]["use_prev_heatmap_only_for_hint_index"] = only_clicked
        if in_training is not None:
            t["Train"]["prev_heatmap"] = in_training
        t["PATH"]["ROOT_PATH"] = "./"
        t["Morph"].update(cosineSimilarityLoss=True, threePointAngle=True)
    c = util.load_config(_write(tmp_path, old_style))
    assert c.Model.prev_heatmap == rule
    assert c.toDict() == util.load_config("config/spineweb_ours.yaml", [f"Model.prev_heatmap={rule}"]).toDict()


def test_old_keys_that_contradict_are_refused(tmp_path):
    def contradict(t):
        t["Model"]["use_prev_heatmap_only_for_hint_index"] = False
        t["Model"].pop("prev_heatmap")
        t["Train"]["prev_heatmap"] = "clicked"
    with pytest.raises(ConfigError, match="have no equivalent"):
        util.load_config(_write(tmp_path, contradict))
    with pytest.raises(ConfigError, match="replaces"):
        util.load_config(_write(tmp_path, lambda t: t["Model"].update(use_prev_heatmap_only_for_hint_index=True)))
    with pytest.raises(ConfigError, match="replaced by Model.prev_heatmap"):
        util.load_config("config/spineweb_ours.yaml", ["Train.prev_heatmap=clicked"])
    with pytest.raises(ConfigError, match="'Morph.threePointAngle' was removed"):
        util.load_config("config/spineweb_ours.yaml", ["Morph.threePointAngle=false"])


def test_checkpoint_config_with_old_keys_means_clicked_channels(tmp_path):
    """Checkpoints written before Model.prev_heatmap (the stage-3 model of 2026-12-02 among them) stored
    Model.use_prev_heatmap_only_for_hint_index + Train.prev_heatmap: the committed model's config rewritten
    that way must still read as 'clicked'."""
    import copy

    import torch

    checkpoint = read_checkpoint("pretrained/aasce_cpu.pth")
    assert checkpoint.config().Model.prev_heatmap == "clicked"
    old = copy.deepcopy(checkpoint.entries["config"])
    del old["Model"]["prev_heatmap"]
    old["Model"]["use_prev_heatmap_only_for_hint_index"] = True
    old["Train"]["prev_heatmap"] = "clicked"
    torch.save({"model": checkpoint.state_dict, **checkpoint.entries, "config": old}, tmp_path / "old.pth")
    assert read_checkpoint(tmp_path / "old.pth").config().Model.prev_heatmap == "clicked"
    old["Train"]["prev_heatmap"] = "full"
    torch.save({"model": checkpoint.state_dict, **checkpoint.entries, "config": old}, tmp_path / "old.pth")
    assert read_checkpoint(tmp_path / "old.pth").config().Model.prev_heatmap == "clicked_at_test"


def test_duplicate_keys_non_utf8_and_non_finite_overrides_are_named(tmp_path):
    text = open("config/spineweb_ours.yaml").read()
    duplicated = tmp_path / "dup.yaml"
    duplicated.write_text(text.replace("  batch_size: 4\n", "  batch_size: 4\n  batch_size: 8\n", 1))
    with pytest.raises(ConfigError, match=r"dup.yaml: not valid YAML: duplicate key 'batch_size' \(first at line \d+\)"):
        util.load_config(duplicated)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(text.replace("# The paper", "# Caf\u00e9: the paper", 1).encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml: not a UTF-8 text file \(byte 5 is 0xe9\)"):
        util.load_config(latin1)
    for value in (".inf", ".nan", "-.inf"):
        with pytest.raises(ConfigError, match="'Optimizer.lr' must be a finite number"):
            util.load_config("config/spineweb_ours.yaml", [f"Optimizer.lr={value}"])


def test_click_round_range_is_checked_across_keys():
    c = util.load_config("config/spineweb_ours.yaml", ["Train.min_click_rounds=2"])
    assert (c.Train.min_click_rounds, c.Train.max_click_rounds) == (2, 2)
    with pytest.raises(ConfigError, match=r"Train.min_click_rounds \(3\) exceeds Train.max_click_rounds \(2\)"):
        util.load_config("config/spineweb_ours.yaml", ["Train.min_click_rounds=3"])


def test_merge_config_trees_merges_sections_and_replaces_other_values():
    base = {"Train": {"epoch": 10, "seed": 0}, "Dataset": {"image_size": [512, 256], "aug": {"flip_p": 0.5}}}
    changes = {"Train": {"epoch": 3}, "Dataset": {"image_size": [256, 128], "aug": {"rotate_p": 0.1}}}
    merged = util.merge_config_trees(base, changes)
    assert merged == {"Train": {"epoch": 3, "seed": 0},
                      "Dataset": {"image_size": [256, 128], "aug": {"flip_p": 0.5, "rotate_p": 0.1}}}
    assert base["Train"]["epoch"] == 10 and base["Dataset"]["aug"] == {"flip_p": 0.5}  # inputs untouched


def test_base_chain_is_read_relative_to_each_file(tmp_path, monkeypatch):
    (tmp_path / "root").mkdir()
    (tmp_path / "stages").mkdir()
    (tmp_path / "root" / "paper.yaml").write_text(yaml.safe_dump(_paper_tree()))
    (tmp_path / "stages" / "one.yaml").write_text(
        "BASE: ../root/paper.yaml\nTrain:\n  epoch: 7\nDataset:\n  aug:\n    flip_p: 0.0\n")
    (tmp_path / "stages" / "two.yaml").write_text("BASE: one.yaml\nTrain:\n  batch_size: 2\n")
    monkeypatch.chdir(tmp_path / "root")  # BASE is relative to the file, not to the working directory
    two = util.load_config(tmp_path / "stages" / "two.yaml", ["Train.seed=5"])
    expected = util.load_config(tmp_path / "root" / "paper.yaml", [
        "Train.epoch=7", "Dataset.aug.flip_p=0.0", "Train.batch_size=2", "Train.seed=5"])
    assert two.toDict() == expected.toDict()
    assert two.Dataset.aug.rotate_p == expected.Dataset.aug.rotate_p  # the rest of a merged section is kept


@pytest.mark.parametrize("files, message", [
    ({"c.yaml": "BASE: missing.yaml\n"}, r"c\.yaml: BASE 'missing.yaml' not found"),
    ({"c.yaml": "BASE: 3\n"}, r"c\.yaml: BASE must name another config file .*got 3"),
    ({"c.yaml": "BASE: b.yaml\n", "b.yaml": "BASE: c.yaml\n"},
     r"BASE chain returns to a file .*c\.yaml -> .*b\.yaml -> .*c\.yaml"),
    ({"c.yaml": "BASE: c.yaml\n"}, r"BASE chain returns"),
    ({"c.yaml": "BASE: b.yaml\n", "b.yaml": "- 1\n"}, r"b\.yaml \(BASE of .*c\.yaml\): expected a mapping"),
    ({"c.yaml": "BASE: b.yaml\n", "b.yaml": "Train: [\n"}, r"b\.yaml: not valid YAML"),
    ({"c.yaml": "BASE: p.yaml\nTrain:\n  epochs: 3\n"},
     r"c\.yaml \(with BASE .*p\.yaml\): unknown key 'Train\.epochs'"),
])
def test_bad_base_names_the_file_and_what_is_wrong(tmp_path, files, message):
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(_paper_tree()))
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=message):
        util.load_config(tmp_path / "c.yaml")


def test_shipped_configs_base_only_on_shipped_configs():
    """A config in config/ builds on another config in config/, never on a run record's recipe."""
    folder = Path(__file__).resolve().parents[1] / "config"
    for path in sorted(folder.glob("*.yaml")):
        base = yaml.safe_load(path.read_text()).get("BASE")
        assert base is None or (folder / base).resolve().parent == folder, path.name


RECORDS = Path(__file__).resolve().parents[1] / "experiments"
TWO_HOUR = RECORDS / "two_hour"
# every committed seed of the 48-epoch recipe at 3x (fast48_sN/), found, not listed
TWO_HOUR_SEEDS = sorted(path.name.removeprefix("fast48_s") for path in TWO_HOUR.glob("fast48_s*"))
# every committed seed of the 2-hour recipe at 6x (fast48_clr6_sN/)
CLICK_LR6_SEEDS = sorted(path.name.removeprefix("fast48_clr6_s") for path in TWO_HOUR.glob("fast48_clr6_s*"))
# the recipes of probes and superseded runs live in their run records; they must still load
RECORD_RECIPES = sorted(str(p.relative_to(RECORDS.parent)) for p in RECORDS.rglob("recipe*.yaml"))


@pytest.mark.parametrize("path", RECORD_RECIPES)
def test_recipes_kept_in_run_records_are_valid(path):
    config = util.load_config(path)
    assert config.Dataset.num_keypoint == 68


@pytest.mark.parametrize("recipe, overrides, trained_with", [
    ("config/aasce_cpu_clicks3.yaml", [], "pretrained/aasce_cpu.pth"),
    ("config/aasce_cpu_fast.yaml", [], "experiments/ablation/s0_full/config.yaml"),
    ("config/aasce_cpu_fast.yaml", ["Morph.use=false"], "experiments/ablation/s0_no_morph/config.yaml"),
    ("config/aasce_cpu_fast.yaml", ["Model.use_gating=false"], "experiments/ablation/s0_no_gating/config.yaml"),
    ("config/aasce_cpu_fast.yaml", ["Model.prev_heatmap=none"], "experiments/ablation/s0_no_prev/config.yaml"),
    ("experiments/aasce_cpu_stage5_probe/recipe.yaml", [], "experiments/aasce_cpu_stage5_probe/config.yaml"),
    ("experiments/aasce_cpu_hires_probe/recipe.yaml", [], "experiments/aasce_cpu_hires_probe/config.yaml"),
    *[("experiments/two_hour/recipe_fast48.yaml", [f"Train.seed={seed}"] if seed != "0" else [],
       f"experiments/two_hour/fast48_s{seed}/config.yaml") for seed in TWO_HOUR_SEEDS],
    *[("config/aasce_cpu_2h.yaml", [f"Train.seed={seed}"] if seed != "0" else [],
       f"experiments/two_hour/fast48_clr6_s{seed}/config.yaml") for seed in CLICK_LR6_SEEDS],
    ("config/aasce_cpu_2h.yaml", [], "experiments/two_hour/aasce_cpu_2h/config.yaml"),
    ("experiments/two_hour/aasce_cpu_2h_w18/recipe.yaml", [], "experiments/two_hour/aasce_cpu_2h_w18/config.yaml"),
    ("config/aasce_cpu_fast.yaml", ["Train.epoch=48", "Train.patience=48", "Train.val_every=4"],
     "experiments/two_hour/fast48_s0/config.yaml"),
    ("config/aasce_cpu_fast.yaml", ["Train.ema_decay=0.998", "Train.val_every=4",
                                    "Dataset.train_vertebra_order=fix_rotated"],
     "experiments/fast_probe_ema_fixrot/config.yaml"),
])
def test_recipe_configs_give_the_config_their_committed_runs_trained_with(recipe, overrides, trained_with):
    """The recipes list only what they change against their BASE; resolved, they must still be exactly
    the configs the committed model and the ablation runs were trained with (stored beside them)."""
    if trained_with.endswith(".pth"):
        stored = read_checkpoint(trained_with).config()
    else:
        stored = util.load_config(trained_with)
    assert util.load_config(recipe, overrides).toDict() == stored.toDict()
