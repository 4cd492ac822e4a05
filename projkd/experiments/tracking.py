"""What a run records per epoch: test accuracy, lr, TensorBoard events.

The reference experiments report the *best* test accuracy over epochs,
which selects on the test set; projkd reports the final epoch's as its
main figure and records the best one beside it only to compare with
published tables (METHOD.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from skorch.callbacks import Callback, ProgressBar

from ..callbacks import EpochCalibration, EpochCKA
from ..parallel.process import is_main_process
from .spec import RunSpec, launched_world_size

__all__ = ["EpochTestAccuracy", "RecordLR", "best_epoch", "run_callbacks"]


class EpochTestAccuracy(Callback):
    """Record the test accuracy (``test_acc``) at the end of each epoch.

    Parameters
    ----------
    X, y
        Test inputs and class indices (the net's output ``i`` is class ``i``).
    """

    def __init__(self, X: Any, y: Any) -> None:
        self.X = X
        self.y = y

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        predicted = net.predict(self.X)
        accuracy = float((np.asarray(predicted) == np.asarray(self.y)).mean())
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
        ("test_acc", EpochTestAccuracy(X_test, y_test)),
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
