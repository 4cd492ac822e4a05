"""Planning ``projkd reproduce --epochs auto``: one epoch count that fits the
time budget.

A short throwaway warm-up of each phase on this device -- the teacher, a
student (the costliest requested variant, with the untrained teacher) and,
where it may apply, the lockstep group of a seed's variants -- measures what
each costs: once per run (building, compiling), per epoch (the per-epoch
test evaluation and checkpoint) and per batch. Each warm-up fits
:data:`WARMUP_EPOCHS` short epochs: the warm ones give the step, the
epoch-end callbacks are timed on their own. From them :func:`plan_epochs`
chooses the one epoch count ``E`` of the teacher and of every student with
which the whole command is planned to end at :data:`PLAN_FRACTION` of its
budget.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import InputError

__all__ = [
    "PLAN_FRACTION",
    "PLAN_LIMIT",
    "WARMUP_EPOCHS",
    "PhaseCost",
    "measure_fit",
    "measure_lockstep",
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
        The finished run's evaluation (predictions on the train and test
        sets).
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


#: epochs of each warm-up fit: the first (building, compiling), then warm ones
WARMUP_EPOCHS = 4


def _warm_step(history: Any, batches: int) -> float:
    """Seconds per batch of the warm epochs of a fit's skorch history (its
    ``dur``: the epoch's training loop, before the epoch-end callbacks)."""
    warm = [row["dur"] for row in history[1:]]
    return float(np.mean(warm)) / batches


def _callbacks_s(net: Any) -> float:
    """Seconds of the per-epoch callbacks a fit skips in the warm-up: the
    test score (run once more) and a checkpoint (saved once)."""
    score = dict(net.callbacks_).get("test_score")
    before = time.monotonic()
    if score is not None:
        score.on_epoch_end(net)  # records into the last epoch: a throwaway fit
    with tempfile.TemporaryDirectory() as folder:
        net.save_params(
            f_params=str(Path(folder) / "p.pt"),
            f_optimizer=str(Path(folder) / "o.pt"),
            f_history=str(Path(folder) / "h.json"),
        )
    return time.monotonic() - before


def measure_fit(
    make: Any, X: Any, y: Any, batches: int, batch_size: int, X_test: Any
) -> PhaseCost:
    """The costs of a run of the skorch net that ``make()`` builds.

    Fits :data:`WARMUP_EPOCHS` epochs of ``batches`` batches: the step is
    the mean of the warm epochs' training loops (skorch's ``dur``), the
    per-epoch cost that of the epoch-end callbacks (the test score and a
    checkpoint, timed once), the run's cost what the first epoch took
    beyond them. A prediction on ``X_test`` prices the final evaluation.

    Parameters
    ----------
    make : callable
        Returns the unfitted net; its ``max_epochs`` is set here.
    X, y : array-like
        Training data of at least ``batches * batch_size`` samples.
    batches, batch_size : int
    X_test : array-like
        What the finished run predicts besides the training set.

    Returns
    -------
    cost : PhaseCost
    """
    n = batches * batch_size
    net = make().set_params(max_epochs=WARMUP_EPOCHS)
    started = time.monotonic()
    net.fit(X[:n], y[:n])
    fitted = time.monotonic() - started
    step = _warm_step(net.history, batches)
    epoch = _callbacks_s(net)
    before = time.monotonic()
    net.predict_proba(X_test)
    predict = time.monotonic() - before
    final = predict * (len(y) / max(len(X_test), 1) + 3)  # train, test, CKA
    run = fitted - WARMUP_EPOCHS * (batches * step + epoch)
    return PhaseCost(run_s=max(run, 0.0), epoch_s=epoch, step_s=step, final_s=final)


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
