"""The training pieces of :mod:`projkd.experiments.reproduction`.

A time budget that ends a fit cleanly at an epoch's end, a per-epoch test
score, the teacher's skorch net (batch augmentation, sliced batches seeded per
epoch, bf16 and channels_last on CUDA) and its checkpoint, the fast GPU
settings, and the metrics of a finished run.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skorch.callbacks import Callback, Checkpoint

from ..callbacks import ResumableCheckpoint
from ..metrics import expected_calibration_error, overconfidence
from ..parallel import DataParallelMixin
from ..training.batching import ArrayBatches, ArrayDataset
from .spec import FAST_SETTINGS
from .teacher import TeacherNet

__all__ = ["FAST_SETTINGS", "TimeBudget", "fast_settings"]


# ------------------------------------------------------------------ budget
class _Clock:
    """Time spent in this call, and the longest unit of work seen so far."""

    def __init__(
        self, seconds: float | None, agree: Callable[[bool], bool] | None = None
    ) -> None:
        self.seconds = seconds
        self.agree = agree
        self.start = time.monotonic()
        self.longest = 0.0
        self.worked = False

    def done(self, seconds: float) -> None:
        self.longest = max(self.longest, seconds)
        self.worked = True

    def out_of_time(self) -> bool:
        """Whether the next unit of work might not end within the budget.

        Every call does at least one unit (an epoch, or a run's evaluation),
        so that each call makes progress whatever the budget. With ``agree``
        (the processes of a parallel launch), every process takes the main
        process's answer, so that they all stop at the same point.
        """
        if self.seconds is None:
            return False
        late = self.worked and (
            time.monotonic() - self.start + 1.25 * self.longest > self.seconds
        )
        return late if self.agree is None else bool(self.agree(late))


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
    clock : object
        Shared by every run of one :func:`~projkd.experiments.reproduce` call;
        it has ``done`` and ``out_of_time`` methods.
    """

    def __init__(self, clock: Any) -> None:
        self.clock = clock

    def on_train_begin(self, net: Any, **kwargs: Any) -> None:
        self.last_ = time.monotonic()

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        now = time.monotonic()
        self.clock.done(now - self.last_)
        self.last_ = now
        if self.clock.out_of_time() and len(net.history) < net.max_epochs:
            raise KeyboardInterrupt  # skorch ends fit here, cleanly


class _TestScore(Callback):
    """Record test top-1 and top-5 of the network after every epoch."""

    def __init__(self, X: Any, y: Any, label: str = "", verbose: bool = False):
        self.X = X
        self.y = y
        self.label = label
        self.verbose = verbose

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        logits = net.forward(self.X, training=False, device="cpu").float()
        top1, top5 = _topk(logits.numpy(), np.asarray(self.y))
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


# ----------------------------------------------------------------- teacher
class _TeacherNet(TeacherNet):
    """The command line's :class:`~projkd.experiments.TeacherNet` (batch
    augmentation, mixed precision, channels_last), with batches sliced from
    arrays and shuffled per ``(seed, epoch)``, so that a run resumed from its
    checkpoint shuffles exactly as the uninterrupted run."""

    def __init__(self, *args: Any, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seed = seed

    def get_dataset(self, X: Any, y: Any = None) -> Any:
        return ArrayDataset(X, y)

    def get_iterator(self, dataset: Any, training: bool = False) -> Any:
        return ArrayBatches(
            dataset,
            np.arange(len(dataset)),
            batch_size=self.batch_size,
            shuffle=training,
            seed=self.seed,
            first_epoch=len(self.history) if self.history else 0,
        )


class _AcceleratedTeacherNet(DataParallelMixin, _TeacherNet):
    """:class:`_TeacherNet` trained data-parallel (a parallel launch)."""


class _TeacherCheckpoint(ResumableCheckpoint):
    """ResumableCheckpoint for a plain skorch net (no projectors to save)."""

    def _f_kwargs(self) -> dict[str, Any]:
        return Checkpoint._f_kwargs(self)


# ----------------------------------------------------------------- helpers
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _device_name(device: str) -> str:
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


def _metrics(proba_train, y_train, proba_test, y_test) -> dict[str, float]:
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


def _curve_fields(history: Any, n_train: int) -> dict[str, Any]:
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


def _save_proba(folder: Path, proba: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "test_proba.npy", proba.astype(np.float32))  # 4 MB for CIFAR-100
