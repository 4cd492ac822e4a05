"""skorch callbacks that record calibration and CKA in the history per epoch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from skorch.callbacks import Callback
from skorch.dataset import unpack_data

from .distiller import DistillationOutput
from .metrics._calibration import calibration_bins, calibration_error_from_bins
from .metrics._cka import MinibatchCKA

__all__ = ["EpochCKA", "EpochCalibration"]


class EpochCalibration(Callback):
    """Record the expected calibration error of each epoch's predictions.

    Streams over the batches the net already computes (no extra forward
    pass): bin sums are accumulated per batch and the ECE is recorded as
    ``name`` at the end of the epoch. Targets are the encoded class indices
    the net trains on.

    Parameters
    ----------
    name : str, default="valid_ece"
    on_train : bool, default=False
        Use the training batches (in train mode) instead of validation.
    n_bins : int, default=15
    norm : {"l1", "l2", "max"}, default="l1"

    Examples
    --------
    >>> from projkd.callbacks import EpochCalibration
    >>> callbacks = [EpochCalibration()]  # ProjectorDistiller(..., callbacks=callbacks)
    """

    def __init__(
        self,
        name: str = "valid_ece",
        on_train: bool = False,
        n_bins: int = 15,
        norm: str = "l1",
    ) -> None:
        self.name = name
        self.on_train = on_train
        self.n_bins = n_bins
        self.norm = norm

    def on_epoch_begin(self, net: Any, **kwargs: Any) -> None:
        self.bins_ = [np.zeros(self.n_bins) for _ in range(3)]

    def on_batch_end(
        self,
        net: Any,
        batch: Any = None,
        training: bool = False,
        y_pred: Any = None,
        **kwargs: Any,
    ) -> None:
        if training != self.on_train:
            return
        logits = y_pred[0] if isinstance(y_pred, tuple) else y_pred
        _, y = unpack_data(batch)
        proba = torch.softmax(logits.detach().float(), dim=1)
        confidence, predicted = proba.max(dim=1)
        correct = (predicted.cpu() == torch.as_tensor(y).cpu()).numpy()
        sums = calibration_bins(confidence.cpu().double().numpy(), correct, self.n_bins)
        for total, part in zip(self.bins_, sums, strict=True):
            total += part

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        count, confidence_sum, correct_sum = self.bins_
        if count.sum() > 0:
            error = calibration_error_from_bins(
                count, confidence_sum, correct_sum, self.norm
            )
            net.history.record(self.name, error)


class EpochCKA(Callback):
    """Record the minibatch CKA between student and teacher features per epoch.

    Uses the features of the batches the net already computes and
    :class:`~projkd.metrics.MinibatchCKA` (batches under 4 samples are
    skipped), so it costs no extra forward pass.

    Parameters
    ----------
    name : str, default="valid_cka"
    on_train : bool, default=False
        Use the training batches instead of validation.
    """

    def __init__(self, name: str = "valid_cka", on_train: bool = False) -> None:
        self.name = name
        self.on_train = on_train

    def on_epoch_begin(self, net: Any, **kwargs: Any) -> None:
        self.cka_ = MinibatchCKA()

    def on_batch_end(
        self,
        net: Any,
        batch: Any = None,
        training: bool = False,
        y_pred: Any = None,
        **kwargs: Any,
    ) -> None:
        if training != self.on_train or not isinstance(y_pred, DistillationOutput):
            return
        if len(y_pred.features) >= 4:
            self.cka_.update(y_pred.features.detach(), y_pred.teacher_features)

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        if self.cka_.n_batches:
            net.history.record(self.name, self.cka_.compute())
