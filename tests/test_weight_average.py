"""The moving average of the weights: its update rule, its buffers, and its round trip through a checkpoint."""
import pytest
import torch
from torch import nn

from engine.weight_average import WeightAverage, ema_decay_at


def _net(weight: float) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    with torch.no_grad():
        net[0].weight.fill_(weight)
    return net


def _set(net, weight: float, running_mean: float, batches: int) -> None:
    with torch.no_grad():
        net[0].weight.fill_(weight)
        net[1].running_mean.fill_(running_mean)
        net[1].num_batches_tracked.fill_(batches)


def test_decay_warms_up_then_stays_at_the_configured_value():
    assert ema_decay_at(1, 0.999) == pytest.approx(2 / 11)
    assert ema_decay_at(10, 0.999) == pytest.approx(11 / 20)
    assert ema_decay_at(100_000, 0.999) == 0.999
    assert ema_decay_at(5, 0.3) == 0.3


def test_average_follows_the_rule_on_weights_and_running_statistics_and_copies_counters():
    net = _net(1.0)
    average = WeightAverage(net, decay=0.5)
    expected_weight, expected_mean = 1.0, 0.0  # the copy at construction
    for step, (weight, mean) in enumerate([(3.0, 2.0), (-1.0, 4.0), (7.0, -2.0)], start=1):
        _set(net, weight, mean, batches=10 * step)
        average.update(net)
        d = min(0.5, (1 + step) / (10 + step))  # 2/11, 3/12, 4/13: still warming up below 0.5
        expected_weight = d * expected_weight + (1 - d) * weight
        expected_mean = d * expected_mean + (1 - d) * mean
        assert average.module[0].weight.item() == pytest.approx(expected_weight, rel=1e-6)
        assert average.module[1].running_mean.item() == pytest.approx(expected_mean, rel=1e-6, abs=1e-6)
        assert average.module[1].num_batches_tracked.item() == 10 * step
    assert net[0].weight.item() == 7.0  # the trained network is never touched


def test_state_round_trip_continues_the_same_average():
    net = _net(1.0)
    first = WeightAverage(net, decay=0.9)
    _set(net, 2.0, 1.0, 1)
    first.update(net)
    second = WeightAverage(_net(-5.0), decay=0.9)
    second.load_state_dict(first.state_dict())
    _set(net, 4.0, 3.0, 2)
    first.update(net)
    second.update(net)
    assert second.steps == first.steps == 2
    for key, value in first.module.state_dict().items():
        assert torch.equal(value, second.module.state_dict()[key]), key


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.1])
def test_decay_outside_the_open_unit_interval_is_refused(decay):
    with pytest.raises(ValueError, match="ema decay"):
        WeightAverage(_net(1.0), decay)
