"""What a run records per epoch: test accuracy, lr, TensorBoard events.

The reference experiments report the *best* test accuracy over epochs,
which selects on the test set; projkd reports the final epoch's as its
main figure and records the best one beside it only to compare with
published tables (METHOD.md).

Scoring the whole test set after every epoch can cost more than the epoch
itself (10,000 images against a ``--subset`` of a few hundred): each epoch
is scored on a fixed subset of at most
:data:`~projkd.experiments.spec.EPOCH_TEST_IMAGES` test
images (:func:`epoch_test_rows`), the last epoch on all of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from skorch.callbacks import Callback, ProgressBar
from torch.utils.data import Subset

from ..callbacks import EpochCalibration, EpochCKA
from ..parallel.process import is_main_process
from .spec import RunSpec, launched_world_size

__all__ = [
    "EpochTestAccuracy",
    "RecordLR",
    "best_epoch",
    "epoch_test_rows",
    "epoch_test_set",
    "run_callbacks",
]


def epoch_test_rows(n_test: int, limit: int | None) -> np.ndarray | None:
    """The fixed rows of a test set of ``n_test`` scored after each epoch.

    Parameters
    ----------
    n_test : int
    limit : int or None
        At most this many; None: all.

    Returns
    -------
    rows : ndarray or None
        Sorted row indices, the same in every process and call (seed 0);
        None when all rows are scored.

    Examples
    --------
    >>> epoch_test_rows(10_000, 2000).shape, epoch_test_rows(540, 2000)
    ((2000,), None)
    """
    if limit is None or n_test <= limit:
        return None
    return np.sort(np.random.default_rng(0).choice(n_test, limit, replace=False))


def epoch_test_set(X: Any, y: Any, limit: int | None) -> tuple[Any, Any]:
    """The test set scored after each epoch but the last: ``X, y`` restricted
    to :func:`epoch_test_rows` (a ``Subset`` of a ``Dataset``)."""
    rows = epoch_test_rows(len(y), limit)
    if rows is None:
        return X, y
    if isinstance(X, np.ndarray | torch.Tensor):
        return X[rows], np.asarray(y)[rows]
    return Subset(X, rows.tolist()), np.asarray(y)[rows]


class EpochTestAccuracy(Callback):
    """Record the test accuracy (``test_acc``) at the end of each epoch.

    Parameters
    ----------
    X, y
        Test inputs and class indices (the net's output ``i`` is class ``i``).
    max_images : int or None, default=None
        Score each epoch but the last on a fixed subset of this many test
        images (:func:`epoch_test_rows`); the last epoch scores them all.
        None: all of them every epoch.
    """

    def __init__(self, X: Any, y: Any, max_images: int | None = None) -> None:
        self.X = X
        self.y = y
        self.max_images = max_images

    def on_train_begin(self, net: Any, **kwargs: Any) -> None:
        self.few_ = epoch_test_set(self.X, self.y, self.max_images)

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        last = len(net.history) >= net.max_epochs
        X, y = (self.X, self.y) if last else self.few_
        predicted = net.predict(X)
        accuracy = float((np.asarray(predicted) == np.asarray(y)).mean())
        net.history.record("test_acc", accuracy)


class RecordLR(Callback):
    """Record the first parameter group's learning rate as ``lr`` per epoch."""

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        net.history.record("lr", float(net.optimizer_.param_groups[0]["lr"]))


def best_epoch(history: Any) -> tuple[int | None, float | None]:
    """The epoch (1-based) of the highest ``test_acc`` and that accuracy."""
    scores = [row.get("test_acc") for row in history]
    if not scores or any(score is None for score in scores):
        return None, None
    index = int(np.argmax(scores))
    return index + 1, float(scores[index])


def run_callbacks(
    spec: RunSpec, X_test: Any, y_test: Any, *, distiller: bool
) -> list[tuple[str, Any]]:
    """The callbacks of a run: test accuracy and lr each epoch, the training
    batches' ECE and CKA when ``spec.epoch_metrics`` (distillers only),
    TensorBoard when ``spec.tensorboard``, a progress bar when
    ``spec.progress`` (both on the main process of a parallel launch only).
    TensorBoard comes after the others, so that it sees every value they
    record."""
    main_process = is_main_process()
    callbacks: list[tuple[str, Any]] = [
        ("test_acc", EpochTestAccuracy(X_test, y_test, spec.epoch_test_images)),
        ("record_lr", RecordLR()),
    ]
    if spec.epoch_metrics and distiller:
        callbacks += [
            ("train_ece", EpochCalibration(name="train_ece", on_train=True)),
            ("train_cka", EpochCKA(name="train_cka", on_train=True)),
        ]
    if spec.tensorboard and main_process:
        from skorch.callbacks import TensorBoard
        from torch.utils.tensorboard import SummaryWriter

        callbacks.append(("tensorboard", TensorBoard(SummaryWriter(spec.tensorboard))))
    if spec.progress and main_process:
        # "auto" would count the whole data set's batches; a process of a
        # parallel launch trains on its share, so count the first epoch's
        parallel = launched_world_size() > 1
        bar = ProgressBar(batches_per_epoch="count" if parallel else "auto")
        callbacks.append(("progress", bar))
    return callbacks
