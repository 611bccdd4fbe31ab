"""Config loading: every unknown, missing or mistyped key is an error naming the key and the file."""
import pytest
import yaml

import util
from util import ConfigError

CONFIGS = ["config/spineweb_ours.yaml", "config/quick.yaml"]


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


def _write(tmp_path, mutate):
    tree = yaml.safe_load(open("config/spineweb_ours.yaml"))
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
        t["Train"].pop("prev_heatmap", None)
        t["Dataset"]["aug"].pop("occlusion_p", None)
        t["Dataset"]["aug"].pop("occlusion_height", None)
        t["Train"].pop("min_click_rounds", None)
        t["Optimizer"].pop("click_lr_mult", None)
    c = util.load_config(_write(tmp_path, drop))
    assert c.Train.prev_heatmap == "full" and c.Dataset.aug.occlusion_p == 0.0
    assert c.Dataset.aug.occlusion_height == [0.1, 0.3]
    assert c.Train.min_click_rounds == 0 and c.Optimizer.click_lr_mult == 1.0
    with pytest.raises(ConfigError, match="'Train.prev_heatmap' must be one of"):
        util.load_config("config/spineweb_ours.yaml", ["Train.prev_heatmap=some"])


def test_click_round_range_is_checked_across_keys():
    c = util.load_config("config/spineweb_ours.yaml", ["Train.min_click_rounds=2"])
    assert (c.Train.min_click_rounds, c.Train.max_click_rounds) == (2, 2)
    with pytest.raises(ConfigError, match=r"Train.min_click_rounds \(3\) exceeds Train.max_click_rounds \(2\)"):
        util.load_config("config/spineweb_ours.yaml", ["Train.min_click_rounds=3"])
