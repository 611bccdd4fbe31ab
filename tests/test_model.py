"""The network: official weight format, official outputs, variants and shapes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from munch import Munch

from model import InteractiveKeypointNet, build_model, load_weights
from model.click_encoder import ClickEncoder
from model.gating import ChannelExcitation, InteractionGate
from conftest import SHARED

REFERENCE = SHARED / "reference"
PAPER_PARAMETERS = 32_942_889  # the official RITM_SE_HRNet32 at the paper config
K = 68



def make_config(**model) -> Munch:
    values = dict(width=32, ocr_width=128, small=False, SE_maxpool=True, use_gating=True,
                  click_scale_init=0.05, imagenet_pretrained="")
    values.update(model)
    return Munch.fromDict({"Dataset": {"num_keypoint": K}, "Model": values})


def reference_file(name: str) -> Path:
    path = REFERENCE / name
    if not path.is_file():
        pytest.skip(f"../shared/reference not present: {path} is needed for this comparison")
    return path


def random_inputs(batch=1, rows=64, cols=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, rows, cols, generator=g) * 2 - 1
    clicks = torch.zeros(batch, K, rows, cols)
    clicks[:, 5] = torch.rand(batch, rows, cols, generator=g)
    prev = torch.rand(batch, K, rows, cols, generator=g)
    return image, clicks, prev


# --- the official format and outputs -------------------------------------------------------------

def test_official_w8_checkpoint_reproduces_official_logits():
    checkpoint = reference_file("official_w8_checkpoint.pth")
    fixture = torch.load(reference_file("official_w8_fixture.pth"), weights_only=False)
    net = build_model(make_config(width=fixture["config"]["width"], ocr_width=fixture["config"]["ocr_width"]))
    extra = load_weights(net, checkpoint)
    assert extra["epoch"] == 1
    net.eval()
    with torch.no_grad():
        logits, aux_logits = net(fixture["input_image"], fixture["hint_heatmap"], fixture["prev_heatmap"])
        only_main = net.predict(fixture["input_image"], fixture["hint_heatmap"], fixture["prev_heatmap"])
    torch.testing.assert_close(logits, fixture["logits"], atol=1e-4, rtol=0)
    torch.testing.assert_close(aux_logits, fixture["aux_logits"], atol=1e-4, rtol=0)
    assert torch.equal(only_main, logits)


def test_paper_config_has_the_official_keys_and_shapes():
    reference = json.loads(reference_file("official_w32_state_dict.json").read_text())
    with torch.device("meta"):
        net = build_model(make_config())
    ours = {k: list(v.shape) for k, v in net.state_dict().items()}
    official = {k.removeprefix("module."): v for k, v in reference["state_dict_shapes"].items()}
    assert ours == official
    assert list(ours) == list(official)  # same order as well
    assert sum(p.numel() for p in net.parameters()) == reference["n_parameters"]


def test_paper_config_parameter_count():
    with torch.device("meta"):
        net = build_model(make_config())
    assert sum(p.numel() for p in net.parameters()) == PAPER_PARAMETERS


# --- variants and shapes ---------------------------------------------------------------------------

@pytest.mark.parametrize("model", [dict(width=8, ocr_width=16, small=True), dict(width=18, ocr_width=64, small=False)],
                         ids=["small-w8", "w18"])
def test_variants_run_and_return_input_sized_logits(model):
    net = build_model(make_config(**model)).eval()
    image, clicks, prev = random_inputs(batch=2)
    with torch.no_grad():
        logits, aux_logits = net(image, clicks, prev)
        main_only, no_aux = net(image, clicks, prev, with_aux=False)
    assert logits.shape == aux_logits.shape == (2, K, 64, 32)
    assert no_aux is None
    assert torch.equal(main_only, logits)


def test_without_gating_the_gate_weights_disappear_and_forward_works():
    net = build_model(make_config(width=8, ocr_width=16, small=True, use_gating=False)).eval()
    assert not any("HintEncSENet" in k for k in net.state_dict())
    image, clicks, prev = random_inputs()
    with torch.no_grad():
        logits, _ = net(image, clicks, prev)
    assert logits.shape == (1, K, 64, 32)


def test_training_step_reaches_every_part():
    torch.manual_seed(0)
    net = build_model(make_config(width=8, ocr_width=16, small=True)).train()
    image, clicks, prev = random_inputs(batch=2)
    logits, aux_logits = net(image, clicks, prev)
    (logits.mean() + aux_logits.mean()).backward()
    for name in ("hintmap_encoder.3.scale", "hintmap_encoder.0.weight", "ritm_hrnet.conv1.weight",
                 "ritm_hrnet.HintEncSENet.hintEncoder.convs.0.0.weight", "ritm_hrnet.cls_head.weight",
                 "ritm_hrnet.aux_head.3.weight"):
        grad = net.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_missing_prev_probs_means_zeros():
    net = build_model(make_config(width=8, ocr_width=16, small=True)).eval()
    image, clicks, _ = random_inputs()
    with torch.no_grad():
        assert torch.equal(net.predict(image, clicks), net.predict(image, clicks, torch.zeros_like(clicks)))


def test_wrong_number_of_click_channels_is_rejected():
    net = InteractiveKeypointNet(num_keypoints=K, width=8, ocr_width=16, small=True)
    image, clicks, prev = random_inputs()
    with pytest.raises(ValueError, match="68 channels"):
        net(image, clicks[:, :10], prev[:, :10])


# --- pieces ---------------------------------------------------------------------------------------

def test_click_encoder_reads_previous_probabilities_first_then_clicks():
    encoder = ClickEncoder(num_keypoints=3, scale_init=-0.05)
    with torch.no_grad():
        encoder[0].weight[:, 3:] = 0  # channels 3..5 = clicks: switched off
    prev, clicks = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    out = encoder(prev, clicks)
    assert out.shape == (1, 64, 4, 4)
    assert torch.equal(out, encoder(prev, torch.zeros_like(clicks)))
    assert not torch.equal(out, encoder(torch.zeros_like(prev), clicks))
    # the learnable scale is used as its absolute value
    assert torch.allclose(encoder(prev, clicks), encoder[3].scale.abs() * encoder[:3](torch.cat([prev, clicks], 1)))


def test_gate_is_a_sigmoid_weight_per_channel():
    gate = InteractionGate(feature_channels=16, num_keypoints=4, gate_channels=40, hidden_channels=32,
                           squeeze_channels=4).eval()
    out = gate(torch.rand(2, 16, 8, 4), torch.rand(2, 4, 32, 16))
    assert out.shape == (2, 40, 1, 1)
    assert bool(((out > 0) & (out < 1)).all())


def test_excitation_squeezes_by_max_or_mean():
    x = torch.rand(1, 4, 5, 3)
    max_se, mean_se = ChannelExcitation(4, 2, 6, max_pool=True), ChannelExcitation(4, 2, 6, max_pool=False)
    mean_se.load_state_dict(max_se.state_dict())
    expected_max = torch.sigmoid(max_se.conv2(torch.relu(max_se.conv1(x.amax((2, 3), keepdim=True)))))
    expected_mean = torch.sigmoid(max_se.conv2(torch.relu(max_se.conv1(x.mean((2, 3), keepdim=True)))))
    torch.testing.assert_close(max_se(x), expected_max)
    torch.testing.assert_close(mean_se(x), expected_mean)


# --- the builder ------------------------------------------------------------------------------------

def test_builder_names_missing_config_keys():
    config = make_config()
    del config.Model["use_gating"]
    with pytest.raises(KeyError, match="Model.use_gating"):
        build_model(config)


def test_builder_warns_and_trains_from_scratch_without_imagenet_file(tmp_path):
    config = make_config(width=8, ocr_width=16, small=True, imagenet_pretrained=str(tmp_path / "absent.pth"))
    with pytest.warns(UserWarning, match="from scratch"):
        net = build_model(config)
    assert isinstance(net, InteractiveKeypointNet)


# --- prediction speed-ups ---------------------------------------------------------------------------

def test_prepared_copy_folds_batchnorm_and_keeps_the_logits():
    from model.inference import prepare_for_inference

    net = build_model(make_config(width=8, ocr_width=16, small=True)).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that folding is really checked
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    image, clicks, prev = random_inputs()
    for channels_last in (False, True):
        fast = prepare_for_inference(net, channels_last=channels_last)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
        with torch.inference_mode():
            torch.testing.assert_close(fast.predict(image, clicks, prev), net.predict(image, clicks, prev),
                                       atol=1e-4, rtol=0)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # original untouched


def test_benchmark_runs_and_checks_outputs(capsys):
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "bench" / "bench_model.py"
    spec = importlib.util.spec_from_file_location("bench_model", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.main(["--models", "cpu", "--size", "64", "32", "--runs", "1", "--warmup", "0", "--threads", "1"])
    variants = report["models"]["cpu"]["variants"]
    assert set(variants) == {"forward_with_aux", "predict", "predict_folded_bn", "predict_folded_bn_cl"}
    assert all(v["matches"] for v in variants.values())
    assert '"forward_with_aux"' in capsys.readouterr().out
