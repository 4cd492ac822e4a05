"""The training pieces of ``projkd reproduce``.

A time budget that ends a fit cleanly at an epoch's end (:class:`Clock`,
:class:`TimeBudget`), a per-epoch test score (:class:`TestScore`), the
teacher's checkpoint, the fast GPU settings, and the metrics and files of a
finished run.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skorch.callbacks import Callback, Checkpoint

from ...callbacks import ResumableCheckpoint
from ...metrics import expected_calibration_error, overconfidence
from ..spec import FAST_SETTINGS
from ..tracking import epoch_test_set

__all__ = [
    "FAST_SETTINGS",
    "Clock",
    "TeacherCheckpoint",
    "TestScore",
    "TimeBudget",
    "curve_fields",
    "device_name",
    "fast_settings",
    "process_start",
    "run_metrics",
    "save_proba",
    "sha256",
]


# ------------------------------------------------------------------ budget
class Clock:
    """Time spent in this call, and the longest unit of work seen so far.

    One clock is shared by every run of a :func:`~projkd.experiments.reproduce`
    call: each epoch and each evaluation reports its duration (:meth:`done`),
    and the next unit starts only if it should end within the budget
    (:meth:`out_of_time`).

    Parameters
    ----------
    seconds : float or None
        The call's time budget; None: no limit.
    agree : callable or None, default=None
        ``agree(late) -> bool``: under a parallel launch, the main process's
        answer for every process.
    start : float or None, default=None
        The ``timer`` time the budget counts from (e.g.
        :func:`process_start`); None: now.
    timer : callable, default=time.monotonic
        Seconds; every duration of the call (epochs, evaluations, phases)
        is read from it.

    Attributes
    ----------
    stop_at : float or None
        The seconds past which :meth:`out_of_time` stops the work: the budget,
        unless a plan moves it (``--epochs auto`` plans to end well before the
        budget and stops only past :data:`~.planning.PLAN_LIMIT` of it).

    Examples
    --------
    >>> clock = Clock(None)
    >>> clock.done(2.0)
    >>> clock.out_of_time()
    False
    """

    def __init__(
        self,
        seconds: float | None,
        agree: Callable[[bool], bool] | None = None,
        start: float | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds = seconds
        self.stop_at = seconds  # where out_of_time stops (a plan's net: later)
        self.agree = agree
        self.timer = timer
        self.start = timer() if start is None else start
        self.longest = 0.0
        self.worked = False

    def elapsed(self) -> float:
        """Seconds since the call started."""
        return self.timer() - self.start

    def report(self) -> dict[str, Any]:
        """The budget, the seconds used so far and the margin left (None
        without a budget)."""
        used = self.elapsed()
        margin = None if self.seconds is None else self.seconds - used
        return {
            "seconds": self.seconds,
            "used_s": round(used, 2),
            "margin_s": (None if margin is None else round(margin, 2)),
        }

    def done(self, seconds: float) -> None:
        """Record a finished unit of work that took ``seconds``."""
        self.longest = max(self.longest, seconds)
        self.worked = True

    def out_of_time(self) -> bool:
        """Whether the next unit of work might not end within the budget.

        Every call does at least one unit (an epoch, or a run's evaluation),
        so that each call makes progress whatever the budget. With ``agree``
        (the processes of a parallel launch), every process takes the main
        process's answer, so that they all stop at the same point.
        """
        if self.stop_at is None:
            return False
        late = self.worked and (self.elapsed() + 1.25 * self.longest > self.stop_at)
        return late if self.agree is None else bool(self.agree(late))


def process_start() -> float:
    """The :func:`time.monotonic` time at which this process started.

    Read from Linux's ``/proc`` (to its clock's tick, 10 ms), so that a
    command's budget counts its interpreter's start and imports; elsewhere,
    or if ``/proc`` cannot be read, now.

    Examples
    --------
    >>> import time
    >>> 0 <= time.monotonic() - process_start() < 1e6
    True
    """
    now = time.monotonic()
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            # the fields after the command's name, from the third: starttime
            # is the 22nd, in clock ticks since boot
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
            since_boot = float(uptime.read().split()[0])
        age = since_boot - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return now
    return now - max(age, 0.0)


class TimeBudget(Callback):
    """Stop training cleanly when the next epoch might overrun a time budget.

    At the end of each epoch (after the callbacks listed before it have
    scored and saved it), the longest epoch so far -- wall time from one epoch
    end to the next, scoring and saving included -- is compared with the time
    left; if another might not fit, training ends through skorch's
    ``KeyboardInterrupt`` path, leaving a usable estimator and a checkpoint to
    resume from.

    Parameters
    ----------
    clock : Clock
        Shared by every run of one :func:`~projkd.experiments.reproduce` call.
    """

    def __init__(self, clock: Any) -> None:
        self.clock = clock

    def on_train_begin(self, net: Any, **kwargs: Any) -> None:
        self.last_ = self.clock.timer()

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        now = self.clock.timer()
        self.clock.done(now - self.last_)
        self.last_ = now
        if self.clock.out_of_time() and len(net.history) < net.max_epochs:
            raise KeyboardInterrupt  # skorch ends fit here, cleanly


class TestScore(Callback):
    """Record test top-1 and top-5 of the network after every epoch.

    Parameters
    ----------
    X, y : array-like
        The test set; the history's ``test_acc`` and ``test_top5`` columns.
    label : str, default=""
        The run's name in the line printed per epoch.
    verbose : bool, default=False
        Print a line per epoch on standard error.
    max_images : int or None, default=None
        Score each epoch but the last on a fixed subset of this many test
        images (:func:`~projkd.experiments.tracking.epoch_test_set`), the
        last on all of them; None: all of them every epoch.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        X: Any,
        y: Any,
        label: str = "",
        verbose: bool = False,
        max_images: int | None = None,
    ):
        self.X = X
        self.y = y
        self.label = label
        self.verbose = verbose
        self.max_images = max_images

    def on_train_begin(self, net: Any, **kwargs: Any) -> None:
        self.few_ = epoch_test_set(self.X, self.y, self.max_images)

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        last = len(net.history) >= net.max_epochs
        X, y = (self.X, self.y) if last else self.few_
        logits = net.forward(X, training=False, device="cpu").float()
        top1, top5 = _topk(logits.numpy(), np.asarray(y))
        net.history.record("test_acc", top1)
        net.history.record("test_top5", top5)
        if self.verbose:
            row = net.history[-1]
            print(
                f"[reproduce] {self.label} epoch {row['epoch']}/{net.max_epochs}: "
                f"train loss {row.get('train_loss', float('nan')):.3f}, "
                f"test {100 * top1:.2f}% ({row['dur']:.1f} s)",
                file=sys.stderr,
                flush=True,
            )


def _topk(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    k = min(5, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top1 = float(np.mean(scores.argmax(1) == y))
    return top1, float(np.mean((top == y[:, None]).any(1)))


# -------------------------------------------------------------- checkpoint
class TeacherCheckpoint(ResumableCheckpoint):
    """:class:`~projkd.callbacks.ResumableCheckpoint` for a plain skorch net
    such as :class:`~projkd.teacher.TeacherNet`: the network, optimizer and
    history, with no projector files."""

    def _f_kwargs(self) -> dict[str, Any]:
        return Checkpoint._f_kwargs(self)


# ----------------------------------------------------------------- helpers
def sha256(path: Path) -> str:
    """The hex SHA-256 digest of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def device_name(device: str) -> str:
    """The accelerator's marketing name (e.g. ``"NVIDIA H100"``), or ``"cpu"``."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu"


def fast_settings(
    device: str, fast: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fast settings requested for ``device``, and those applied.

    On CUDA with ``fast``, :data:`FAST_SETTINGS`; elsewhere none (fp32,
    eager). Every setting is one the estimators support, so the two are
    equal; ``results.json`` records both.

    Returns
    -------
    requested, applied : dict
    """
    if torch.device(device).type != "cuda" or not fast:
        return {}, {}
    return dict(FAST_SETTINGS), dict(FAST_SETTINGS)


def run_metrics(
    proba_train: np.ndarray,
    y_train: np.ndarray,
    proba_test: np.ndarray,
    y_test: np.ndarray,
) -> dict[str, float]:
    """The figures of a finished run from its predicted probabilities.

    Returns
    -------
    metrics : dict
        ``test_acc`` (top-1), ``test_top5``, ``train_acc``, ``gap`` (train
        minus test accuracy), ``ece`` and ``overconfidence`` on the test set.
    """
    train_acc = float(np.mean(proba_train.argmax(1) == y_train))
    top1, top5 = _topk(proba_test, y_test)
    return {
        "test_acc": top1,
        "test_top5": top5,
        "train_acc": train_acc,
        "gap": train_acc - top1,
        "ece": expected_calibration_error(
            y_test, proba_test, labels=np.arange(proba_test.shape[1])
        ),
        "overconfidence": overconfidence(
            y_test, proba_test, labels=np.arange(proba_test.shape[1])
        ),
    }


def curve_fields(history: Any, n_train: int) -> dict[str, Any]:
    """A run's training curve from its skorch history (with :class:`TestScore`).

    Returns
    -------
    fields : dict
        The best epoch's test top-1/top-5 and its (1-based) number, epochs,
        training time and images per second, and the per-epoch test and
        train accuracy.
    """
    test = [float(row["test_acc"]) for row in history]
    top5 = [float(row["test_top5"]) for row in history]
    best = int(np.argmax(test))
    seconds = float(sum(row["dur"] for row in history))
    return {
        "best_test_acc": test[best],
        "best_test_top5": top5[best],
        "best_epoch": best + 1,
        "epochs": len(history),
        "train_time_s": seconds,
        "images_per_s": n_train * len(history) / seconds if seconds else None,
        "curve_test_acc": test,
        "curve_train_acc": [
            float(row["train_acc"]) if "train_acc" in row else None for row in history
        ],
    }


def save_proba(folder: Path, proba: np.ndarray) -> None:
    """Write a run's test probabilities as ``folder/test_proba.npy`` (float32)."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "test_proba.npy", proba.astype(np.float32))  # 4 MB for CIFAR-100
