"""Training a teacher with skorch: :class:`TeacherNet` and :func:`train_teacher`.

One net for every teacher projkd trains (the library's :func:`train_teacher`,
``projkd train-teacher``, ``projkd reproduce``): skorch's classifier on the
logits of any output (:func:`~projkd.features.logits_of`), with batch
augmentation on the device, mixed precision, channels_last, and the
distiller's array batches (:class:`~projkd.training.arrays.ArrayBatchesMixin`:
placed by ``data_device``, prefetched, shuffled per ``(random_state,
epoch)``, so that a run resumed from its checkpoint trains as the
uninterrupted run) and its ``nonfinite_loss``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from skorch import NeuralNetClassifier
from skorch.dataset import Dataset as SkorchDataset
from skorch.utils import to_tensor
from torch import nn

from ..features import logits_of
from ..training.arrays import ArrayBatchesMixin
from ..training.device import to_channels_last
from ..training.finite import FiniteStepMixin
from ..training.precision import ScaledStepMixin, autocast, grad_scaler
from ..training.records import DeviceRecordsMixin
from ..utils import seeded

__all__ = ["TeacherNet", "train_teacher"]


class TeacherNet(
    FiniteStepMixin,
    ScaledStepMixin,
    DeviceRecordsMixin,
    ArrayBatchesMixin,
    NeuralNetClassifier,
):
    """A skorch classifier for training teachers: on the logits of any output,
    with batch augmentation, mixed precision and seeded, resumable shuffling.

    Parameters
    ----------
    module : torch.nn.Module class, factory callable or instance
        As for :class:`skorch.NeuralNetClassifier`. Its output may be a tensor
        of logits or any form :func:`~projkd.features.logits_of` reads (a
        Hugging Face model's ``ImageClassifierOutput``).
    criterion : torch criterion class, default=torch.nn.CrossEntropyLoss
        On the logits (skorch's default, ``NLLLoss``, expects probabilities).
    train_transform : callable or None, default=None
        Applied to each training batch on ``device`` (e.g.
        :class:`projkd.augment.RandomCropFlip`); never to evaluation.
    mixed_precision : {"bf16", "fp16"} or None, default=None
        Autocast the forward pass; logits and loss stay float32, and fp16
        scales the loss (``torch.amp.GradScaler``).
    channels_last : bool, default=False
        Keep the network and 4-D batches in ``torch.channels_last``.
    random_state : int, RandomState instance or None, default=None
        Seeds torch for the duration of :meth:`fit` (a module given as a class
        or factory is then built under it). An integer also fixes each epoch's
        shuffled order of array input from ``(random_state, epoch)`` alone.
    data_device : {"auto"} or str or torch.device, default="auto"
        Where array input lives during ``fit``, as for
        :class:`~projkd.ProjectorDistiller`.
    nonfinite_loss : {"raise", "skip"}, default="raise"
        A NaN or infinite training loss raises
        :class:`~projkd.training.finite.NonFiniteLossError` or, with
        ``"skip"``, skips the batch, as for :class:`~projkd.ProjectorDistiller`.
    **kwargs
        Any other :class:`skorch.NeuralNetClassifier` parameter.

    Notes
    -----
    Training batches are shuffled every epoch (``iterator_train__shuffle=True``
    unless told otherwise; skorch's default is not to shuffle). Arrays and
    tensors are wrapped in an :class:`~projkd.training.batching.ArrayDataset`
    and iterated as :class:`~projkd.training.batching.ArrayBatches` (one
    slice per batch, no per-sample collation) unless another iterator or
    ``DataLoader`` argument is set; a ``Dataset`` goes through skorch's
    ``DataLoader``. Labels are class indices ``0..C-1``. No training step
    reads a value back: the batch losses stay on the device until the
    epoch ends (:mod:`projkd.training.records`), and torch's optimizers are
    fused (:class:`~projkd.training.finite.FusedOptimizerMixin`).

    Examples
    --------
    >>> from projkd.data import load_digits
    >>> from projkd.models import DigitsCNN
    >>> X, y = load_digits()
    >>> net = TeacherNet(DigitsCNN(width=4), max_epochs=1, train_split=None,
    ...                  verbose=0, random_state=0).fit(X[:64], y[:64])
    >>> net.predict_proba(X[:2]).shape
    (2, 10)
    """

    prefixes_ = NeuralNetClassifier.prefixes_ + ["train_transform"]

    def __init__(
        self,
        module: Any,
        *args: Any,
        criterion: Any = nn.CrossEntropyLoss,
        train_transform: Any = None,
        mixed_precision: str | None = None,
        channels_last: bool = False,
        random_state: Any = None,
        data_device: Any = "auto",
        nonfinite_loss: str = "raise",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("iterator_train__shuffle", True)  # SGD wants shuffling
        super().__init__(module, *args, criterion=criterion, **kwargs)
        self.train_transform = train_transform
        self.mixed_precision = mixed_precision
        self.channels_last = channels_last
        self.random_state = random_state
        self.data_device = data_device
        self.nonfinite_loss = nonfinite_loss

    def fit(self, X: Any, y: Any = None, **fit_params: Any) -> TeacherNet:
        """skorch's ``fit``, under ``random_state``.

        Parameters
        ----------
        X : ndarray, tensor or Dataset
        y : array-like of int or None
            Class indices (None when ``X`` is a Dataset yielding them).
        **fit_params
            Passed to skorch's ``fit``.

        Returns
        -------
        self : TeacherNet
        """
        with seeded(self.random_state, self._compute_device()):
            super().fit(X, y, **fit_params)
        return self

    def _compute_device(self) -> Any:
        """Where the network runs (skorch's ``device``; None means the CPU)."""
        return self.device if self.device is not None else "cpu"

    def initialize_module(self) -> TeacherNet:
        super().initialize_module()
        if self.channels_last:
            to_channels_last(self.module_)
        # the fp16 step's loss scaler (ScaledStepMixin); None otherwise
        self.grad_scaler_ = grad_scaler(self._compute_device(), self.mixed_precision)
        return self

    # ------------------------------------------------------------------ data
    def get_dataset(self, X: Any, y: Any = None) -> Any:
        """Arrays and tensors become an
        :class:`~projkd.training.batching.ArrayDataset` placed by
        ``data_device`` (with skorch's default ``dataset``); anything else is
        skorch's."""
        default = self.dataset is SkorchDataset and not self.get_params_for("dataset")
        if default and isinstance(X, (np.ndarray, torch.Tensor)):
            return self.array_dataset(X, y)
        return super().get_dataset(X, y)

    # -------------------------------------------------------------- training
    def infer(self, x: Any, **fit_params: Any) -> torch.Tensor:
        """The float32 logits of a batch: augmented when training, in
        channels_last and under autocast as set."""
        x = to_tensor(x, device=self.device)
        if isinstance(x, torch.Tensor):
            if self.train_transform is not None and self.module_.training:
                x = self.train_transform(x)
            if self.channels_last:
                x = to_channels_last(x)
        device = x.device if isinstance(x, torch.Tensor) else self._compute_device()
        with autocast(device, self.mixed_precision):
            output = super().infer(x, **fit_params)
        logits = logits_of(output, network="teacher")
        return logits if self.mixed_precision is None else logits.float()

    def get_loss(
        self, y_pred: Any, y_true: Any, X: Any = None, training: bool = False
    ) -> torch.Tensor:
        """skorch's loss; a training loss goes through ``nonfinite_loss``
        (:meth:`~projkd.training.finite.FiniteStepMixin.guard_nonfinite`)."""
        loss = super().get_loss(y_pred, y_true, X=X, training=training)
        if not training:
            return loss
        return self.guard_nonfinite(loss, loss.detach().reshape(1), ("loss",))


def train_teacher(
    model: nn.Module,
    X: Any,
    y: Any,
    *,
    random_state: int | None = None,
    **net_params: Any,
) -> nn.Module:
    """Train a teacher with skorch on class indices and return it in eval mode.

    A thin wrapper over :class:`TeacherNet` (a cross-entropy classifier on
    the logits): any skorch or :class:`TeacherNet` parameter (``max_epochs``,
    ``lr``, ``optimizer``, ``optimizer__momentum``, ``callbacks``, ``device``,
    ``train_transform``, ``mixed_precision``, ...) can be passed. ``model`` is
    trained in place.

    Parameters
    ----------
    model : torch.nn.Module
        E.g. ``projkd.models.get_model("resnet32x4")``.
    X : array-like, tensor or Dataset
    y : array-like of int or None
        Class indices 0..C-1 (the teacher's output ``i`` means class ``i``).
    random_state : int or None, default=None
        Seeds torch for the duration of training; an integer also fixes each
        epoch's batch order.
    **net_params
        :class:`TeacherNet` parameters; ``train_split=None``, ``verbose=0``
        and ``iterator_train__shuffle=True`` by default.

    Returns
    -------
    teacher : torch.nn.Module
        ``model``, trained, in eval mode.

    Examples
    --------
    >>> from projkd.data import load_digits
    >>> from projkd.models import DigitsCNN
    >>> X, y = load_digits()
    >>> teacher = train_teacher(DigitsCNN(width=4), X, y, max_epochs=1)
    >>> teacher.training
    False
    """
    params: dict[str, Any] = {"train_split": None, "verbose": 0, **net_params}
    net = TeacherNet(model, random_state=random_state, **params).fit(X, y)
    module: nn.Module = net.module_
    return module.eval()
