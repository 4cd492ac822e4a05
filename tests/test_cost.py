"""Parameters, MACs and measured speed (projkd.analysis.cost)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from projkd.analysis import format_markdown
from projkd.analysis.cost import (
    ModelCost,
    cost_sentence,
    count_macs,
    count_parameters,
    measure_speed,
    measure_speeds,
    model_cost,
    model_costs,
)
from projkd.models import get_model


def _macs_by_hooks(model: nn.Module, input_shape) -> int:
    """An independent count: each conv/linear layer's MACs from its output shape."""
    total = 0

    def hook(module, _inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = (module.in_channels // module.groups) * module.weight[
                0, 0
            ].numel()
            total += output.numel() * per_output
        else:
            total += output.numel() * module.in_features

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *input_shape))
    for handle in handles:
        handle.remove()
    return total


def test_macs_of_a_hand_computed_network():
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),  # 8*8 outputs * 4 channels * 3*3*3 = 6912
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, groups=4),  # 8*8*4 * 1*3*3 = 2304
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),  # 8
    )
    assert count_macs(net, (3, 8, 8)) == 6912 + 2304 + 8
    assert count_parameters(net) == (3 * 4 * 9 + 4) + (4 * 9 + 4) + (4 * 2 + 2)


@pytest.mark.parametrize("name", ["resnet8", "mobilenetv2", "shufflenetv1"])
def test_macs_of_zoo_models_match_a_layer_by_layer_count(name):
    model = get_model(name)
    assert count_macs(model, (3, 32, 32)) == _macs_by_hooks(model, (3, 32, 32))


def test_speed_is_measured_and_modes_are_restored():
    model = get_model("resnet8", num_classes=10).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    speed = measure_speed(model, (3, 32, 32), batch_size=4, warmup=1, repeats=3)
    assert speed["batch_size"] == 4 and speed["device"] == "cpu"
    assert speed["latency_ms"] > 0
    assert speed["images_per_s"] == pytest.approx(4000 / speed["latency_ms"])
    assert all(m.training for m in model.modules())
    # BatchNorm statistics did not move: the passes ran in eval mode.
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_model_cost_counts_without_timing_when_asked():
    model = get_model("wrn_16_1")
    cost = model_cost(model, (3, 32, 32), measure=False)
    assert cost.params == count_parameters(model)
    assert cost.macs == count_macs(model, (3, 32, 32))
    assert cost.latency_ms is None and cost.device is None
    timed = model_cost(model, (3, 32, 32), warmup=0, repeats=1)
    assert timed.batch_size == 1 and timed.latency_ms > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_shape": ()}, "input_shape must be the shape of one sample"),
        ({"input_shape": (3, 0, 32)}, "input_shape must be"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"repeats": 0}, "repeats must be at least 1"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    args = {"input_shape": (3, 32, 32), **kwargs}
    shape = args.pop("input_shape")
    with pytest.raises(ValueError, match=match):
        measure_speed(get_model("resnet8"), shape, **args)


def test_cost_sentence_reads_both_ways():
    teacher = ModelCost(params=10, macs=600, latency_ms=8.2, batch_size=1, device="cpu")
    student = {**teacher.as_dict(), "macs": 100, "latency_ms": 2.0}
    assert cost_sentence(teacher, student, name="s") == (
        "s: 6.0x fewer MACs, 4.1x faster at batch 1 on cpu"
    )
    bigger = {"macs": 900, "latency_ms": 16.4, "batch_size": 8, "device": "cuda:0"}
    sentence = cost_sentence(
        {**teacher.as_dict(), "test_acc": 0.70}, {**bigger, "test_acc": 0.725}
    )
    assert sentence == (
        "student: 1.5x more MACs, 2.0x slower at batch 8 on cuda:0, +2.5 points"
    )


def test_speed_is_timed_with_subnormals_flushed_and_the_setting_restored():
    """Subnormal weights of an under-trained network made CPU latency many
    times slower in the demo; measure_speed flushes them while it times, then
    restores torch's default (subnormals kept) for everything else."""
    flushed = []  # whether subnormals read as 0 in each timed forward pass
    model = nn.Linear(4, 2)
    with torch.no_grad():
        model.weight.fill_(1e-39)  # subnormal in float32
    tiny = torch.tensor([1e-39], dtype=torch.float32)
    model.register_forward_pre_hook(
        lambda module, args: flushed.append((tiny * 1.0).item() == 0.0)
    )
    measure_speed(model, (4,), repeats=2, warmup=0)
    assert flushed and all(flushed)  # flushing was on while timing
    assert (tiny * 1.0).item() != 0.0  # and is off again


class _FakeClock:
    """A clock that only the fake networks move (the timer of measure_speeds)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class _Costs(nn.Module):
    """A network whose n-th pass takes ``seconds[n]`` of a fake clock (the
    warm-up passes included; none after them), whatever the machine; it logs
    its passes."""

    def __init__(self, clock, seconds, log=None, name=""):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.clock, self.seconds = clock, list(seconds)
        self.log, self.name = log if log is not None else [], name

    def forward(self, x):
        self.clock.now += self.seconds.pop(0) if self.seconds else 0.0
        self.log.append(self.name)
        return x * self.weight


def test_networks_are_timed_interleaved_in_rotating_order():
    clock, log = _FakeClock(), []
    nets = {n: _Costs(clock, [1e-3] * 4, log, n) for n in ("a", "b", "c")}
    measure_speeds(nets, (2,), warmup=1, repeats=3, timer=clock)
    timed = log[3:]  # after one warm-up pass of each
    assert timed == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


def test_a_slowed_repeat_is_absorbed_by_the_median():
    clock = _FakeClock()
    teacher = _Costs(clock, [8e-3] * 5 + [8e-3] * 10 + [0.5] + [8e-3] * 9)
    student = _Costs(clock, [2e-3] * 25)
    costs = model_costs(
        {"teacher": teacher, "student": student},
        (2,),
        warmup=5,
        repeats=20,
        timer=clock,
    )
    assert costs["teacher"].latency_ms == pytest.approx(8.0)
    assert costs["teacher"].latency_spread == pytest.approx(0.0)
    sentence = cost_sentence(costs["teacher"], costs["student"])
    assert "4.0x faster at batch 1 on cpu" in sentence


def test_a_noisy_latency_says_noisy_instead_of_a_ratio():
    """Contention slowed every other pass of one copy of the student (the
    demo printed "204.8x slower" for a student with 62x fewer MACs): the
    table and the sentence say "noisy" and print no speed ratio."""
    clock = _FakeClock()
    slowed = [2e-3, 0.3] * 13  # a deliberately slowed repeat, every other one
    nets = {
        "teacher": _Costs(clock, [8e-3] * 25),
        "copy 1": _Costs(clock, slowed[:25]),
        "copy 2": _Costs(clock, [2e-3] * 25),
    }
    costs = model_costs(nets, (2,), warmup=5, repeats=20, timer=clock)
    records = [{"model": name, **cost.as_dict()} for name, cost in costs.items()]
    table = format_markdown(records)
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:5]}
    assert "noisy" in rows["copy 1"] and "noisy" not in rows["copy 2"]
    assert "noisy" not in rows["teacher"]
    noisy = cost_sentence(costs["teacher"], costs["copy 1"], name="copy 1")
    assert "latency noisy at batch 1 on cpu" in noisy
    assert "faster" not in noisy and "slower" not in noisy
    assert "4.0x faster" in cost_sentence(costs["teacher"], costs["copy 2"])
