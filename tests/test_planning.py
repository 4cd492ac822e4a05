"""--epochs auto: the plan's arithmetic, its refusal, and the lr warm-up.

Every test of the planner's logic is given its timings (a fake clock, or
the warm-up's costs injected), so that it passes on any machine, however
loaded; real timings belong to benchmarks/.
"""

from __future__ import annotations

import functools
import json
import time

import numpy as np
import pytest
import torch
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback

from projkd.experiments.data import Data
from projkd.experiments.recipes import LinearWarmup, recipe
from projkd.experiments.reproduction import command, runs
from projkd.experiments.reproduction.planning import (
    STUDENT_FINAL,
    TEACHER_FINAL,
    WARMUP_EPOCHS,
    PhaseCost,
    final_passes,
    measure_fit,
    plan_epochs,
)
from projkd.experiments.reproduction.subcommand import epochs_arg
from projkd.experiments.reproduction.training import Clock

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
    passes = {"predict_proba": 3.0, "predict": 1.0}
    cost = measure_fit(lambda: net, X, y, 4, 16, X[:32], passes)
    assert net.max_epochs >= WARMUP_EPOCHS and len(net.history) == WARMUP_EPOCHS
    assert cost.step_s > 0 and cost.epoch_s > 0 and cost.final_s > 0
    assert cost.run_s >= 0
    # the step is the warm epochs' training loop, per batch
    warm = np.mean([row["dur"] for row in net.history[1:]]) / 4
    assert cost.step_s == pytest.approx(warm)


class _FakeClock:
    """Seconds that pass only when the fakes below say so."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class _ScoreCallback:
    def __init__(self, clock):
        self.clock = clock

    def on_epoch_end(self, net, **kwargs):
        self.clock.now += 0.5  # the per-epoch test score


class _TimedNet:
    """A net whose fit, callbacks and predictions take set seconds of a fake
    clock: the warm-up's arithmetic, whatever the machine."""

    def __init__(self, clock, first_epoch=7.0, epoch=2.0):
        self.clock, self.first_epoch, self.epoch = clock, first_epoch, epoch
        self.callbacks_ = [("test_score", _ScoreCallback(clock))]

    def set_params(self, **params):
        self.max_epochs = params["max_epochs"]
        return self

    def fit(self, X, y):
        durs = [self.first_epoch] + [self.epoch] * (self.max_epochs - 1)
        # each epoch: its training loop (skorch's dur), then the test score
        self.clock.now += sum(durs) + 0.5 * self.max_epochs
        self.history = [{"dur": dur} for dur in durs]

    def save_params(self, **files):  # the checkpoint the run saves each epoch
        self.clock.now += 0.25

    def predict_proba(self, X):
        self.clock.now += 1.0

    def transform(self, X):
        self.clock.now += 0.2


def test_the_warm_up_arithmetic_with_injected_timings():
    """4 epochs of 10 batches: the step is a warm epoch over its batches, a
    run's epoch pays its test score and its checkpoint, the run's own cost
    is what the fit took beyond its epochs (the warm-up saved no
    checkpoint: none is taken off), and the evaluation is each method's
    pass over the test set times the passes the finished run makes."""
    clock = _FakeClock()
    passes = {"predict_proba": 6.0, "transform": 1.0}
    X, y = np.zeros((80, 2)), np.zeros(80)
    cost = measure_fit(lambda: _TimedNet(clock), X, y, 10, 8, X, passes, clock)
    assert cost.step_s == pytest.approx(2.0 / 10)
    assert cost.epoch_s == pytest.approx(0.5 + 0.25)
    assert cost.run_s == pytest.approx(7.0 - 2.0)
    assert cost.final_s == pytest.approx(6 * 1.0 + 0.2)


class _CountingEstimator:
    """What ``runs._finish`` calls, counted in rows, answering with arrays of
    the right shapes."""

    def __init__(self, epochs):
        self.history = [
            {"test_acc": 0.5, "test_top5": 0.9, "dur": 1.0} for _ in range(epochs)
        ]
        self.rows = {}

    def _count(self, method, X):
        self.rows[method] = self.rows.get(method, 0) + len(X)

    def predict_proba(self, X):
        self._count("predict_proba", X)
        return np.full((len(X), 100), 0.01, dtype=np.float32)

    def transform(self, X):
        self._count("transform", X)
        return np.random.default_rng(0).normal(size=(len(X), 4))

    def transform_teacher(self, X):
        self._count("transform_teacher", X)
        return np.random.default_rng(1).normal(size=(len(X), 4))


def _cifar_sized_context(tmp_path):
    n_train, n_test = 50_000, 10_000  # CIFAR-100's sizes
    data = Data(
        np.zeros((n_train, 1), np.float32),
        np.arange(n_train) % 100,
        np.zeros((n_test, 1), np.float32),
        np.arange(n_test) % 100,
        100,
        3,
    )
    return runs.RunContext(
        out=tmp_path,
        data=data,
        clock=Clock(None),
        device="cpu",
        epochs=2,
        teacher_arch="wrn_40_2",
        student_arch="wrn_16_2",
        teacher_weights=None,
        fast={},
        recipe=lambda arch: {},
        equal_widths=True,
        verbose=False,
    )


def test_the_planned_final_phase_counts_what_finish_does(tmp_path, monkeypatch):
    """With CIFAR-100's sizes, a finished student run evaluates 6 test sets'
    worth of predictions (train 5x, test 1x) and 2 of features: the plan
    prices exactly those passes (it priced about 3 before: the warm-up's
    rows stood for the training set); the teacher phase its logits over
    both sets."""
    ctx = _cifar_sized_context(tmp_path)
    n_train, n_test = len(ctx.data.y_train), len(ctx.data.y_test)
    estimator = _CountingEstimator(ctx.epochs)
    monkeypatch.setattr(runs, "_variant_params", lambda estimator: {})
    assert runs._finish(ctx, estimator, "kd", 0) is not None
    done = {method: rows / n_test for method, rows in estimator.rows.items()}
    assert done == final_passes(STUDENT_FINAL, n_train, n_test)
    assert sum(done.values()) == 8  # at least 8 test sets' worth, as the issue
    # the teacher phase: its logits over the training and test sets
    logits = {}

    def count_logits(model, X, device):
        logits[len(X)] = logits.get(len(X), 0) + 1
        return torch.zeros(len(X), 100)

    monkeypatch.setattr(runs, "_logits", count_logits)
    monkeypatch.setattr(runs, "_load", lambda ctx, weights: torch.nn.Identity())
    monkeypatch.setattr(runs, "sha256", lambda path: "0" * 64)
    (tmp_path / "teacher").mkdir()
    monkeypatch.setattr(
        runs,
        "_train_teacher",
        lambda ctx, folder: (torch.nn.Identity(), {"epochs": ctx.epochs}),
    )
    runs._teacher_phase(ctx)
    passes = final_passes(TEACHER_FINAL, n_train, n_test)
    assert {n_train: 1, n_test: 1} == logits
    assert passes == {"predict_proba": (n_train + n_test) / n_test}
    # a plan of these costs prices 8 unit passes per student run
    unit = {m: 1.0 for m in STUDENT_FINAL}
    final = sum(unit[m] * count for m, count in done.items())
    cost = PhaseCost(run_s=0.0, epoch_s=1.0, step_s=0.0, final_s=final)
    plan = _plan(budget=1000.0, batches=782, teacher=None, student=cost, runs=1)
    assert plan["phases"]["student"]["final_s"] == 8.0


def test_a_budget_spent_before_the_warm_up_is_refused_at_once(tmp_path, monkeypatch):
    def warm_up(*args, **kwargs):
        raise AssertionError("the warm-up ran")

    monkeypatch.setattr(command, "measure_phases", warm_up)
    with pytest.raises(ValueError, match="spent before the warm-up"):
        command.reproduce(
            dataset="digits",
            subset=100,
            variants=["alone"],
            epochs="auto",
            time_budget=5,
            started=time.monotonic() - 10,  # the interpreter's start counts
            out=tmp_path,
        )
    assert not (tmp_path / "settings.json").exists()


def test_a_warm_up_that_spends_the_budget_stops_at_once(tmp_path, monkeypatch):
    """A warm-up fit that takes 110 s of a 120-s budget (a loaded machine):
    the refusal comes after it, not after the remaining fits."""
    clock = _FakeClock()
    fits = []

    def slow_fit(*args, **kwargs):
        fits.append(1)
        clock.now += 110.0
        return PhaseCost(run_s=0.0, epoch_s=1.0, step_s=1.0, final_s=1.0)

    monkeypatch.setattr(runs, "measure_fit", slow_fit)
    monkeypatch.setattr(command, "Clock", functools.partial(Clock, timer=clock))
    with pytest.raises(ValueError, match="spent during the warm-up: 110.0 s"):
        command.reproduce(
            dataset="digits",
            subset=100,
            variants=["alone", "kd"],
            epochs="auto",
            time_budget=120,
            started=0.0,
            out=tmp_path,
        )
    assert fits == [1]  # the teacher's; neither the student's nor lockstep's


def test_a_lockstep_warm_up_that_would_not_fit_is_skipped(tmp_path, monkeypatch):
    """Teacher and student warm-ups of 100 s each leave 340 s of 0.9 x 600:
    a lockstep group of 6 variants would take about 600 s to warm up, so it
    is neither measured nor chosen."""
    clock = _FakeClock()

    def slow_fit(*args, **kwargs):
        clock.now += 100.0
        return PhaseCost(run_s=0.0, epoch_s=0.01, step_s=0.01, final_s=0.0)

    def lockstep(*args, **kwargs):
        raise AssertionError("the lockstep group was warmed up")

    monkeypatch.setattr(runs, "measure_fit", slow_fit)
    monkeypatch.setattr(runs, "measure_lockstep", lockstep)
    monkeypatch.setattr(command, "Clock", functools.partial(Clock, timer=clock))
    monkeypatch.setattr(command, "run_all", lambda ctx, variants, seeds: ([], []))
    results = command.reproduce(
        dataset="digits",
        variants=["alone", "kd", "fd0", "fd1", "fd3", "kd_lp"],
        epochs="auto",
        time_budget=600,
        min_epochs=1,
        started=0.0,
        out=tmp_path,
    )
    plan = results["plan"]
    assert plan["planned_at_s"] == 200.0 and not plan["lockstep"]
    assert plan["step_s"]["lockstep"] is None


def test_auto_plans_once_records_the_plan_and_resumes_it(tmp_path, monkeypatch, capsys):
    """The real warm-up runs and measures; the plan is made from injected
    costs (50 s an epoch of each network) on a clock that stands still, so
    that the epochs do not depend on this machine's load: 3 epochs in 0.9 x
    600 s. The plan is frozen in the folder's settings, followed, set beside
    the phases it ran in results.json, and reused by a later call."""
    measure = command.measure_phases
    measured = {}

    def warm_up(*args, **kwargs):
        measured.update(measure(*args, **kwargs))
        slow = PhaseCost(run_s=0.0, epoch_s=50.0, step_s=0.0, final_s=0.0)
        return {**measured, "teacher": slow, "student": slow}

    monkeypatch.setattr(command, "measure_phases", warm_up)
    monkeypatch.setattr(command, "Clock", functools.partial(Clock, timer=lambda: 0.0))
    args = dict(
        dataset="digits",
        subset=200,
        variants=["alone", "kd"],
        epochs="auto",
        time_budget=600,
        min_epochs=1,
        out=tmp_path,
        lockstep=False,
        started=0.0,
        verbose=True,
    )
    first = command.reproduce(**args)
    said = [
        line[len("[reproduce] ") :]
        for line in capsys.readouterr().err.splitlines()
        if line.startswith("[reproduce] ") and " epoch " not in line
    ]
    assert said == [  # no phase sits silent: the warm-up, the plan, evaluations
        "--epochs auto: warm-up, 4 epochs of 2 batches of the teacher",
        "--epochs auto: warm-up, 4 epochs of 2 batches of the student (kd)",
        "--epochs auto: planned 3 epochs, 450 s of the 600 s budget",
        "teacher: evaluation (200 training and 540 test images)",
        "alone seed 0: evaluation (200 training and 540 test images, CKA)",
        "kd seed 0: evaluation (200 training and 540 test images, CKA)",
    ]
    assert measured["batches"] == 4  # 200 images in batches of 64
    for phase in ("teacher", "student"):
        assert measured[phase].step_s > 0  # skorch's own epoch timer
    plan = first["plan"]
    assert plan["epochs"] == 3 and not plan["lockstep"]
    assert plan["predicted_s"] == 3 * 150.0
    assert plan["phases"]["teacher"] == {"fit_s": 150.0, "final_s": 0.0}
    saved = json.loads((tmp_path / "settings.json").read_text())
    assert saved["plan"] == plan
    assert saved["variants"] == ["alone", "kd"] and saved["seeds"] == 1
    assert first["complete"]
    assert first["achieved_epochs"] == {"teacher": 3, "alone-seed0": 3, "kd-seed0": 3}
    phases = first["phases"]
    assert phases["planned_in_this_call"]
    assert [row["phase"] for row in phases["rows"]] == [
        "teacher",
        "alone-seed0",
        "kd-seed0",
    ]
    assert phases["rows"][1]["predicted_fit_s"] == 150.0
    assert (
        "Phase times: the plan against this call"
        in (tmp_path / "results.md").read_text()
    )

    def replan(*args, **kwargs):
        raise AssertionError("a resumed call must not plan again")

    monkeypatch.setattr(command, "measure_phases", replan)
    again = command.reproduce(**{**args, "time_budget": 60})  # another budget
    assert again["plan"] == plan and again["complete"]
    assert not again["phases"]["planned_in_this_call"]
    assert again["phases"]["rows"] == []  # every run was done: none ran


def test_epochs_argument_is_auto_or_a_positive_int():
    assert epochs_arg("auto") == "auto"
    assert epochs_arg("12") == 12
    for bad in ("0", "-3", "many"):
        with pytest.raises(Exception, match="positive integer"):
            epochs_arg(bad)


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
