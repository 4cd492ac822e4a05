"""--epochs auto: the plan's arithmetic, its refusal, and the lr warm-up."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback

from projkd.experiments.recipes import LinearWarmup, recipe
from projkd.experiments.reproduction import command
from projkd.experiments.reproduction.planning import (
    WARMUP_EPOCHS,
    PhaseCost,
    measure_fit,
    plan_epochs,
)

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


def test_cuda_graphs_are_chosen_only_when_measured_faster():
    faster = PhaseCost(run_s=5.0, epoch_s=0.5, step_s=0.05, final_s=0.5)
    plan = _plan(graphs=faster)
    assert plan["graphs"] and plan["student"]["step_s"] == 0.05
    assert plan["step_s"]["student"] == 0.1 and plan["step_s"]["graphs"] == 0.05
    assert plan["epochs"] > _plan()["epochs"]  # compiling costs once, steps save
    slower = _plan(graphs=PhaseCost(run_s=5.0, epoch_s=0.5, step_s=0.2, final_s=0.5))
    assert not slower["graphs"] and slower["student"]["step_s"] == 0.1
    assert not _plan()["graphs"] and _plan()["step_s"]["graphs"] is None


def test_too_few_epochs_are_refused_naming_what_would_fit():
    with pytest.raises(ValueError, match=r"--min-epochs 50.*--time-budget \d+"):
        _plan(min_epochs=50)


def test_auto_needs_a_budget(tmp_path):
    with pytest.raises(ValueError, match="time_budget"):
        command.reproduce(dataset="digits", epochs="auto", out=tmp_path)


def test_the_warm_up_measures_each_cost_of_a_real_fit(small_digits):
    X, y = small_digits
    net = NeuralNetClassifier(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)),
        criterion=torch.nn.CrossEntropyLoss,
        train_split=None,
        verbose=0,
        batch_size=16,
    )
    cost = measure_fit(lambda: net, X, y, batches=4, batch_size=16, X_test=X[:32])
    assert net.max_epochs == WARMUP_EPOCHS and len(net.history) == WARMUP_EPOCHS
    assert cost.step_s > 0 and cost.epoch_s > 0 and cost.final_s > 0
    assert cost.run_s >= 0
    # the step is the warm epochs' training loop, per batch
    warm = np.mean([row["dur"] for row in net.history[1:]]) / 4
    assert cost.step_s == pytest.approx(warm)


def test_auto_plans_once_records_the_plan_and_resumes_it(tmp_path, monkeypatch):
    """The real warm-up runs and measures; the plan made from its costs (here
    set, so that the epochs do not depend on this machine's load: 50 s an
    epoch of each network, 3 epochs in 0.9 x 600 s) is frozen in the
    folder's settings, followed, and reused by a later call."""
    measure = command.measure_phases
    measured = {}

    def warm_up(*args, **kwargs):
        measured.update(measure(*args, **kwargs))
        slow = PhaseCost(run_s=0.0, epoch_s=50.0, step_s=0.0, final_s=0.0)
        return {**measured, "teacher": slow, "student": slow}

    monkeypatch.setattr(command, "measure_phases", warm_up)
    args = dict(
        dataset="digits",
        subset=200,
        variants=["alone", "kd"],
        epochs="auto",
        time_budget=600,
        min_epochs=1,
        out=tmp_path,
        lockstep=False,
    )
    first = command.reproduce(**args)
    assert measured["batches"] == 4  # 200 images in batches of 64
    for phase in ("teacher", "student"):
        assert measured[phase].step_s > 0 and measured[phase].epoch_s > 0
    plan = first["plan"]
    assert plan["epochs"] == 3 and not plan["lockstep"]
    assert json.loads((tmp_path / "settings.json").read_text())["plan"] == plan
    assert first["complete"]
    assert first["achieved_epochs"] == {"teacher": 3, "alone-seed0": 3, "kd-seed0": 3}

    def replan(*args, **kwargs):
        raise AssertionError("a resumed call must not plan again")

    monkeypatch.setattr(command, "measure_phases", replan)
    again = command.reproduce(**{**args, "time_budget": 60})  # another budget
    assert again["plan"] == plan and again["complete"]


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
