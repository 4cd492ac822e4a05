"""Planning ``projkd reproduce --epochs auto``: one epoch count that fits the
time budget.

A short throwaway warm-up of each phase on this device -- the teacher, a
student (the costliest requested variant, with the untrained teacher) and,
where it may apply, the lockstep group of a seed's variants -- measures what
each costs: once per run (building, compiling), per epoch (the per-epoch
test evaluation and checkpoint), per batch, and the finished run's
evaluation. Each warm-up fits :data:`WARMUP_EPOCHS` short epochs: the warm
ones give the step, the epoch-end callbacks are timed on their own, and one
pass of each evaluation method over the test set is timed, then counted as
often as the finished run makes it over the *whole* training and test sets
(:data:`STUDENT_FINAL`, :data:`TEACHER_FINAL`). From them :func:`plan_epochs`
chooses the one epoch count ``E`` of the teacher and of every student with
which the whole command is planned to end at :data:`PLAN_FRACTION` of its
budget, and predicts each phase's seconds; :func:`phase_times` sets them
beside the measured ones in ``results.json``, so that each plan can be
checked against its run.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import InputError

__all__ = [
    "PLAN_FRACTION",
    "PLAN_LIMIT",
    "STUDENT_FINAL",
    "TEACHER_FINAL",
    "WARMUP_EPOCHS",
    "PhaseCost",
    "check_budget_left",
    "final_passes",
    "measure_fit",
    "measure_lockstep",
    "phase_times",
    "plan_epochs",
    "warmup_rows",
]

#: the share of the budget a plan aims at (the rest absorbs noise)
PLAN_FRACTION = 0.9
#: the share of the budget past which a planned run is stopped (cleanly, to
#: resume): the plan's safety net, as the measured costs vary by 10-20%
PLAN_LIMIT = 1.15


@dataclasses.dataclass
class PhaseCost:
    """What one run of a phase costs, in seconds.

    Attributes
    ----------
    run_s : float
        Once per run: building the estimator, compiling, the first epoch's
        extra cost.
    epoch_s : float
        Once per epoch whatever its length: the test evaluation, the
        checkpoint.
    step_s : float
        One training batch.
    final_s : float
        The finished run's evaluation (:data:`STUDENT_FINAL` or
        :data:`TEACHER_FINAL`: predictions on the whole train and test
        sets, features for CKA).
    """

    run_s: float
    epoch_s: float
    step_s: float
    final_s: float

    def seconds(self, epochs: int, batches: int) -> float:
        """A run of ``epochs`` epochs of ``batches`` batches."""
        return self.run_s + self.final_s + epochs * self.epoch(batches)

    def epoch(self, batches: int) -> float:
        """One epoch of ``batches`` batches."""
        return self.epoch_s + batches * self.step_s

    def fit(self, epochs: int, batches: int) -> float:
        """The run's training: once per run, then ``epochs`` epochs."""
        return self.run_s + epochs * self.epoch(batches)


#: What a finished student run evaluates (``runs._finish``): per method of
#: the estimator, the data sets it passes over.
STUDENT_FINAL: dict[str, tuple[str, ...]] = {
    "predict_proba": ("test", "train"),
    "transform": ("test",),
    "transform_teacher": ("test",),
}
#: What the finished teacher phase evaluates (``runs._teacher_phase``): its
#: logits (a ``predict_proba`` of its net) over both sets.
TEACHER_FINAL: dict[str, tuple[str, ...]] = {"predict_proba": ("train", "test")}


def final_passes(
    final: Mapping[str, tuple[str, ...]], n_train: int, n_test: int
) -> dict[str, float]:
    """How many passes over the test set each method of ``final`` amounts to.

    Parameters
    ----------
    final : mapping
        :data:`STUDENT_FINAL` or :data:`TEACHER_FINAL`.
    n_train, n_test : int
        The sizes of the whole training and test sets (not the warm-up's).

    Returns
    -------
    passes : dict of str to float

    Examples
    --------
    >>> final_passes(STUDENT_FINAL, 50_000, 10_000)
    {'predict_proba': 6.0, 'transform': 1.0, 'transform_teacher': 1.0}
    """
    size = {"train": n_train, "test": n_test}
    return {
        method: sum(size[split] for split in splits) / max(n_test, 1)
        for method, splits in final.items()
    }


#: epochs of each warm-up fit: the first (building, compiling), then warm ones
WARMUP_EPOCHS = 4


def _warm_step(history: Any, batches: int) -> float:
    """Seconds per batch of the warm epochs of a fit's skorch history (its
    ``dur``: the epoch's training loop, before the epoch-end callbacks)."""
    warm = [row["dur"] for row in history[1:]]
    return float(np.mean(warm)) / batches


def _callbacks_s(net: Any, timer: Callable[[], float]) -> tuple[float, float]:
    """Seconds of the per-epoch callbacks of a run: the test score (run once
    more; the warm-up fit ran it every epoch) and a checkpoint (which the
    warm-up fit never saved: saved once here)."""
    score = dict(net.callbacks_).get("test_score")
    before = timer()
    if score is not None:
        net.max_epochs += 1  # scored as an epoch before the last: a subset
        score.on_epoch_end(net)  # records into the last epoch: a throwaway fit
    scored = timer()
    with tempfile.TemporaryDirectory() as folder:
        net.save_params(
            f_params=str(Path(folder) / "p.pt"),
            f_optimizer=str(Path(folder) / "o.pt"),
            f_history=str(Path(folder) / "h.json"),
        )
    return scored - before, timer() - scored


def measure_fit(
    make: Any,
    X: Any,
    y: Any,
    batches: int,
    batch_size: int,
    X_test: Any,
    passes: Mapping[str, float],
    timer: Callable[[], float] = time.monotonic,
) -> PhaseCost:
    """The costs of a run of the skorch net that ``make()`` builds.

    Fits :data:`WARMUP_EPOCHS` epochs of ``batches`` batches: the step is
    the mean of the warm epochs' training loops (skorch's ``dur``), the
    per-epoch cost that of the epoch-end callbacks (the test score and a
    checkpoint, timed once), the run's cost what the fit took beyond its
    epochs (the warm-up saves no checkpoint: none is taken off). One pass
    of each method of ``passes`` over ``X_test``, times its count, prices
    the finished run's evaluation.

    Parameters
    ----------
    make : callable
        Returns the unfitted net; its ``max_epochs`` is set here.
    X, y : array-like
        Training data of at least ``batches * batch_size`` samples.
    batches, batch_size : int
    X_test : array-like
        The test set.
    passes : mapping of str to float
        The net's evaluation methods and how many passes over the test set
        the finished run makes of each (:func:`final_passes`, from the sizes
        of the whole training and test sets).
    timer : callable, default=time.monotonic
        Seconds.

    Returns
    -------
    cost : PhaseCost
    """
    n = batches * batch_size
    net = make().set_params(max_epochs=WARMUP_EPOCHS)
    started = timer()
    net.fit(X[:n], y[:n])
    fitted = timer() - started
    step = _warm_step(net.history, batches)
    score, save = _callbacks_s(net, timer)
    final = 0.0
    for method, count in passes.items():
        before = timer()
        getattr(net, method)(X_test)
        final += count * (timer() - before)
    run = fitted - WARMUP_EPOCHS * (batches * step + score)
    return PhaseCost(
        run_s=max(run, 0.0), epoch_s=score + save, step_s=step, final_s=final
    )


def measure_lockstep(make_all: Any, X: Any, y: Any, batches: int, batch_size: int):
    """Seconds of one lockstep group batch: the warm epochs of a group fit
    (fresh estimators, :data:`WARMUP_EPOCHS` epochs of ``batches`` batches),
    from the first estimator's history (whose epoch time spans the group's
    batches and none of the epoch-end callbacks)."""
    from ...lockstep import fit_lockstep

    n = batches * batch_size
    estimators = [e.set_params(max_epochs=WARMUP_EPOCHS) for e in make_all()]
    fit_lockstep(estimators, X[:n], y[:n])
    return _warm_step(estimators[0].history, batches)


def plan_epochs(
    *,
    budget: float,
    elapsed: float,
    batches: int,
    teacher: PhaseCost | None,
    student: PhaseCost,
    runs: int,
    seeds: int,
    lockstep_step_s: float | None,
    min_epochs: int,
    graphs: PhaseCost | None = None,
    fraction: float = PLAN_FRACTION,
) -> dict[str, Any]:
    """The plan: the largest epoch count that ends by ``fraction * budget``.

    Parameters
    ----------
    budget, elapsed : float
        The command's budget and the seconds it has used (the warm-up
        included).
    batches : int
        Training batches per epoch.
    teacher : PhaseCost or None
        None: the teacher is given (or already trained).
    student : PhaseCost
        Of one student run (the costliest variant).
    runs, seeds : int
        Student runs in all, and seeds (a lockstep group per seed).
    lockstep_step_s : float or None
        One lockstep group batch; None: lockstep is not possible.
    min_epochs : int
    graphs : PhaseCost or None, default=None
        The student run with its training step replayed as CUDA graphs
        (``compile__mode="reduce-overhead"``); it replaces ``student`` when
        its step is faster. None: not measured (not on CUDA, not compiled).

    Returns
    -------
    plan : dict
        ``epochs``, ``lockstep``, ``graphs`` (whether the students' steps
        are CUDA graphs), the measured costs, the predicted seconds and the
        budget.

    Raises
    ------
    InputError
        If fewer than ``min_epochs`` epochs fit, naming what would fit.

    Examples
    --------
    >>> cost = PhaseCost(run_s=1.0, epoch_s=0.5, step_s=0.1, final_s=0.5)
    >>> plan = plan_epochs(budget=100.0, elapsed=5.0, batches=10, teacher=cost,
    ...                    student=cost, runs=2, seeds=1, lockstep_step_s=None,
    ...                    min_epochs=1)
    >>> plan["epochs"], plan["lockstep"]
    (17, False)
    """
    eager = student
    use_graphs = graphs is not None and graphs.step_s < student.step_s
    if use_graphs:
        student = graphs  # type: ignore[assignment]
    per_variant = runs // seeds
    separate = per_variant * batches * student.step_s
    group_step = per_variant * student.step_s
    lockstep = False
    if lockstep_step_s is not None and per_variant > 1:
        lockstep = lockstep_step_s * batches < separate
        group_step = lockstep_step_s if lockstep else group_step
    per_epoch = seeds * (per_variant * student.epoch_s + batches * group_step)
    fixed = runs * (student.run_s + student.final_s)
    if teacher is not None:
        per_epoch += teacher.epoch(batches)
        fixed += teacher.run_s + teacher.final_s
    left = fraction * budget - elapsed - fixed
    epochs = max(math.floor(left / per_epoch), 0) if per_epoch > 0 else 0
    plan = {
        "epochs": epochs,
        "lockstep": bool(lockstep),
        "graphs": bool(use_graphs),
        "budget_s": budget,
        "fraction": fraction,
        "planned_at_s": round(elapsed, 2),
        "predicted_s": round(elapsed + fixed + epochs * per_epoch, 2),
        "epoch_s": round(per_epoch, 4),
        "batches": batches,
        "phases": _predicted_phases(
            teacher, student, epochs, batches, per_variant, group_step, lockstep
        ),
        "teacher": None if teacher is None else _rounded(teacher),
        "student": _rounded(student),
        "step_s": {
            "separate": round(per_variant * student.step_s, 6),
            "lockstep": None if lockstep_step_s is None else round(lockstep_step_s, 6),
            "student": round(eager.step_s, 6),
            "graphs": None if graphs is None else round(graphs.step_s, 6),
        },
    }
    if epochs < min_epochs:
        raise InputError(_refusal(plan, min_epochs, left, per_epoch, runs, seeds))
    return plan


def _predicted_phases(
    teacher: PhaseCost | None,
    student: PhaseCost,
    epochs: int,
    batches: int,
    per_variant: int,
    group_step: float,
    lockstep: bool,
) -> dict[str, dict[str, float] | None]:
    """The seconds the plan gives each phase: the teacher's, one student's
    (``fit_s``: building, compiling, its epochs with their test score and
    checkpoint; ``final_s``: its evaluation) and, with ``lockstep``, one
    seed's group fit (its students' evaluations stay theirs)."""
    group = None
    if lockstep:
        once = per_variant * student.run_s
        fit = once + epochs * (per_variant * student.epoch_s + batches * group_step)
        group = {"fit_s": round(fit, 2)}
    return {
        "teacher": None
        if teacher is None
        else {
            "fit_s": round(teacher.fit(epochs, batches), 2),
            "final_s": round(teacher.final_s, 2),
        },
        "student": {
            "fit_s": round(student.fit(epochs, batches), 2),
            "final_s": round(student.final_s, 2),
        },
        "lockstep_group": group,
    }


def phase_times(
    plan: dict[str, Any], measured: Mapping[str, Mapping[str, float]]
) -> list[dict[str, Any]]:
    """The plan's predicted seconds beside the measured ones, phase by phase.

    Parameters
    ----------
    plan : dict
        From :func:`plan_epochs` (its ``phases``).
    measured : mapping
        Per phase run by this call (``"teacher"``, ``"kd-seed0"``,
        ``"lockstep-seed0"``, ...): its ``fit_s`` and/or ``final_s``.

    Returns
    -------
    rows : list of dict
        ``phase``, ``predicted_fit_s``, ``measured_fit_s``,
        ``predicted_final_s``, ``measured_final_s`` (None where a phase has
        no such part, or the plan predicted none).

    Examples
    --------
    >>> plan = {"phases": {"teacher": {"fit_s": 10.0, "final_s": 1.0},
    ...                    "student": {"fit_s": 5.0, "final_s": 2.0},
    ...                    "lockstep_group": None}}
    >>> phase_times(plan, {"teacher": {"fit_s": 11.0, "final_s": 0.9}})[0]
    ... # doctest: +NORMALIZE_WHITESPACE
    {'phase': 'teacher', 'predicted_fit_s': 10.0, 'measured_fit_s': 11.0,
     'predicted_final_s': 1.0, 'measured_final_s': 0.9}
    """
    predicted = plan.get("phases") or {}
    rows = []
    for name, times in measured.items():
        kind = "teacher" if name == "teacher" else "student"
        kind = "lockstep_group" if name.startswith("lockstep-") else kind
        expected = predicted.get(kind) or {}
        row: dict[str, Any] = {"phase": name}
        for part in ("fit_s", "final_s"):
            row[f"predicted_{part}"] = expected.get(part) if part in times else None
            value = times.get(part)
            row[f"measured_{part}"] = None if value is None else round(value, 2)
        if name.startswith("lockstep-"):  # the students' own evaluations
            row["predicted_final_s"] = None
        rows.append(row)
    return rows


def check_budget_left(
    budget: float,
    elapsed: float,
    fraction: float = PLAN_FRACTION,
    *,
    warming_up: bool = False,
) -> None:
    """Refuse to plan when the budget is spent before an epoch could be.

    The budget counts from the interpreter's start: its imports and the
    data's loading are spent before any warm-up fit; when they (and, with
    ``warming_up``, the warm-up's fits so far) already reach ``fraction`` of
    it, no epoch can be planned, and saying so now saves the rest of the
    warm-up.

    Raises
    ------
    InputError
        Naming the seconds spent and a budget that would leave room.

    Examples
    --------
    >>> check_budget_left(120.0, 6.5)
    >>> try:
    ...     check_budget_left(5.0, 6.5)
    ... except InputError as error:
    ...     print(str(error).split(":")[1])
     the budget of 5 s was spent before the warm-up could start
    """
    if elapsed < fraction * budget:
        return
    when, spent = "before the warm-up could start", "loading the data"
    if warming_up:
        when, spent = "during the warm-up", "loading the data and the warm-up fits"
    raise InputError(
        f"--epochs auto: the budget of {budget:g} s was spent {when}: "
        f"{elapsed:.1f} s went to the interpreter's start, the imports, {spent} "
        "(the budget counts from the interpreter's start). Give a larger "
        f"--time-budget (well above {math.ceil(elapsed / fraction)})."
    )


def _rounded(cost: PhaseCost) -> dict[str, float]:
    return {k: round(v, 6) for k, v in dataclasses.asdict(cost).items()}


def _refusal(
    plan: dict[str, Any],
    min_epochs: int,
    left: float,
    per_epoch: float,
    runs: int,
    seeds: int,
) -> str:
    needed = plan["budget_s"] + (min_epochs * per_epoch - left) / plan["fraction"]
    fewer = max(1, int(np.floor(runs / seeds * left / (min_epochs * per_epoch))))
    return (
        f"--epochs auto: the budget of {plan['budget_s']:g} s fits only "
        f"{plan['epochs']} epochs (an epoch of every network takes about "
        f"{per_epoch:.2f} s here), fewer than --min-epochs {min_epochs}. What "
        f"would fit: --time-budget {math.ceil(needed)}, or at most {fewer} "
        "variant(s) per seed, or a larger batch (e.g. --batch-size 512, a "
        "recorded deviation), or a smaller --min-epochs."
    )


def warmup_rows(X: Any, y: Any, batches: int, batch_size: int) -> tuple[Any, Any]:
    """The first ``batches * batch_size`` training samples (all if fewer)."""
    n = min(batches * batch_size, len(y))
    if isinstance(X, torch.Tensor | np.ndarray):
        return X[:n], y[:n]
    return X, y
