"""--epochs auto: the plan's arithmetic, its refusal, and the lr warm-up."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback

from projkd.experiments.recipes import LinearWarmup, recipe
from projkd.experiments.reproduction import command
from projkd.experiments.reproduction.planning import PhaseCost, plan_epochs

COST = PhaseCost(run_s=1.0, epoch_s=0.5, step_s=0.1, final_s=0.5)


def _plan(**kwargs):
    params = dict(
        budget=100.0,
        elapsed=5.0,
        batches=10,
        teacher=COST,
        student=COST,
        runs=3,
        seeds=1,
        lockstep_step_s=None,
        min_epochs=1,
    )
    return plan_epochs(**{**params, **kwargs})


def test_the_plan_ends_by_ninety_percent_of_the_budget():
    plan = _plan()
    # per epoch: teacher 1.5 + 3 students x 1.5; fixed: 4 x 1.5; 90 - 5 - 6 = 79
    assert plan["epochs"] == 79 // 6
    assert plan["predicted_s"] <= 0.9 * 100
    assert plan["predicted_s"] + plan["epoch_s"] > 0.9 * 100  # the largest
    assert _plan(teacher=None)["epochs"] > plan["epochs"]


def test_lockstep_is_chosen_only_when_measured_faster():
    assert _plan(lockstep_step_s=0.2)["lockstep"]  # 0.2 < 3 x 0.1
    slower = _plan(lockstep_step_s=0.4)
    assert not slower["lockstep"] and slower["step_s"]["lockstep"] == 0.4


def test_too_few_epochs_are_refused_naming_what_would_fit():
    with pytest.raises(ValueError, match=r"--min-epochs 50.*--time-budget \d+"):
        _plan(min_epochs=50)


def test_auto_needs_a_budget(tmp_path):
    with pytest.raises(ValueError, match="time_budget"):
        command.reproduce(dataset="digits", epochs="auto", out=tmp_path)


def test_epochs_argument_is_auto_or_a_positive_int():
    assert command._epochs_arg("auto") == "auto"
    assert command._epochs_arg("12") == 12
    for bad in ("0", "-3", "many"):
        with pytest.raises(Exception, match="positive integer"):
            command._epochs_arg(bad)


def test_linear_warmup_then_milestones_in_a_fit():
    """The lr of each epoch of a real skorch fit is the schedule's."""
    params = recipe("cifar100", "wrn_16_2", 8, warmup_epochs=2)
    scheduler = dict(params["callbacks"])["lr_scheduler"]
    seen = []

    class Spy(Callback):
        def on_epoch_begin(self, net, **kwargs):
            seen.append(net.optimizer_.param_groups[0]["lr"])

    net = NeuralNetClassifier(
        torch.nn.Linear(4, 3),
        criterion=torch.nn.CrossEntropyLoss,
        optimizer=params["optimizer"],
        lr=params["lr"],
        max_epochs=8,
        train_split=None,
        verbose=0,
        callbacks=[("lr_scheduler", scheduler), ("spy", Spy())],
    )
    X = np.random.rand(20, 4).astype(np.float32)
    net.fit(X, np.arange(20) % 3)
    factor = LinearWarmup(2, milestones=[5, 6, 7], gamma=0.1)
    expected = [0.05 * factor(e) for e in range(8)]
    np.testing.assert_allclose(seen, expected, rtol=1e-6)
    assert expected[0] < expected[1] < expected[2] == 0.05


def test_a_larger_batch_warms_up_by_default_and_records_it():
    _, deviations = command._recipe_factory("cifar100", 240, 256)
    assert any("warm-up over the first 2 epochs" in d for d in deviations)
    _, deviations = command._recipe_factory("cifar100", 240, 256, 0)
    assert not any("warm-up" in d for d in deviations)
