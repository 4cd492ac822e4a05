"""How ProjectorDistiller turns data into batches (a skorch mixin)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from skorch.dataset import Dataset, check_indexing
from skorch.utils import is_dataset
from torch.utils.data import Subset

from ..errors import InputError, InputTypeError
from ..teacher.cache import cached_teacher_outputs
from ..teacher.frozen import fit_teacher_estimator, is_teacher_estimator
from ..training.arrays import ArrayBatchesMixin
from ..training.batching import ArrayDataset, unwrap_subsets
from ..utils import seeded
from .validation import check_input, check_input_shape, check_target

__all__ = ["ArrayDataMixin"]


class ArrayDataMixin(ArrayBatchesMixin):
    """skorch's ``get_dataset``/``get_iterator`` for arrays sliced into batches.

    Arrays and tensors become an :class:`~projkd.training.batching.ArrayDataset` of
    inputs, *encoded* labels and, when training with the teacher cache, the
    teacher's outputs, iterated by :class:`~projkd.training.batching.ArrayBatches`;
    any other dataset, or a custom iterator, goes through skorch unchanged.
    The host class provides ``_encode``, ``_compute_device``, ``uses_teacher``
    and the teacher parameters. A teacher given as an estimator is fitted
    here, on the training fold alone (:meth:`_teacher_fitted`).

    Every dataset that reaches training or validation carries *encoded*
    labels (indices into ``classes_``), whichever way it was made: sliced
    from the fit's arrays by ``ValidSplit``, given by ``predefined_split``
    (a skorch ``Dataset(X, y)`` or ``(X, y)`` arrays), or returned by a
    callable ``train_split``. See :meth:`get_split_datasets`.
    """

    # provided by the host estimator (ProjectorDistiller and skorch)
    batch_size: int
    cache_teacher: Any
    data_device: Any
    dataset: Any
    history: Any
    iterator_train: Any
    iterator_valid: Any
    memory: Any
    mixed_precision: str | None
    random_state: Any
    teacher: Any
    teacher_: Any
    teacher_layer: str | None
    train_transform: Any
    hint_layers: Any
    _compute_device: Any
    _encode: Any
    get_params_for: Any
    train_split: Any
    uses_teacher: Any
    input_shape_: tuple[int, ...] | None

    def check_data(self, X: Any, y: Any = None) -> None:
        """No-op: ``fit`` has already checked the data and set ``classes_``."""

    def get_dataset(
        self, X: Any, y: Any = None, *, teacher_outputs: bool = True
    ) -> Any:
        """Arrays and tensors become an :class:`~projkd.training.batching.ArrayDataset`
        of inputs, *encoded* labels and, when training with the teacher cache,
        the teacher's outputs (never with ``teacher_outputs=False``, which also
        leaves the data where they are); a Dataset is used as is. A custom
        ``dataset`` class receives encoded labels as well."""
        if is_dataset(X):
            return super().get_dataset(X, y)  # type: ignore[misc]
        if y is not None:
            y = self._encode(y)
        if self.dataset is not Dataset or self.get_params_for("dataset"):
            return super().get_dataset(X, y)  # type: ignore[misc]
        if not teacher_outputs:
            return ArrayDataset(X, y)
        outputs = None
        if y is not None:
            if self._caches_teacher(X):
                outputs = cached_teacher_outputs(
                    self.teacher,
                    self.teacher_,
                    X,
                    layer=self.teacher_layer,
                    device=self._compute_device(),
                    memory=self.memory,
                    batch_size=max(512, self.batch_size),
                    mixed_precision=self.mixed_precision,
                )
        return self.array_dataset(X, y, outputs)

    @contextmanager
    def _teacher_fitted(
        self, X: Any, y: Any, reset: bool, fit_params: dict[str, Any]
    ) -> Iterator[None]:
        """Fit a teacher given as an estimator on this fit's *training* fold.

        The split is computed here, once, on the data without teacher outputs
        (the dataset with them needs the teacher), and reused by
        :meth:`get_split_datasets` for the rest of the fit: a ``ValidSplit``
        without ``random_state`` reshuffles on every call, and the teacher
        must not see the rows that ``valid_*`` scores, ``EarlyStopping`` and
        ``Checkpoint`` judge the student on. Seeded on its own, so that
        whether the fitted teacher comes from the cache or not, the
        student's random stream is the same.
        """
        if not (reset and is_teacher_estimator(self.teacher)):
            yield
            return
        plain = self.get_dataset(X, y, teacher_outputs=False)
        train, valid = plain, None
        if self.train_split:  # called as skorch calls it
            args = () if y is None else (y,)
            train, valid = self.train_split(plain, *args, **fit_params)
        X_fit, y_fit = self._fold_data(train, plain, X, y)
        with seeded(self.random_state, self._compute_device()):
            self.teacher_estimator_ = fit_teacher_estimator(
                self.teacher, X_fit, y_fit, params=self.get_params_for("teacher")
            )
        self.fit_split_ = (plain, train, valid)
        try:
            yield
        finally:
            del self.fit_split_

    def _fold_data(self, part: Any, plain: Any, X: Any, y: Any) -> tuple[Any, Any]:
        """The inputs and encoded labels of ``part`` of the fit's data."""
        base, indices = unwrap_subsets(part)
        if base is not plain or is_dataset(X):
            return part, None  # a dataset of its own: it yields its labels
        y_encoded = None if y is None else self._encode(y)
        if indices is None:
            return X, y_encoded
        rows = torch.as_tensor(indices) if isinstance(X, torch.Tensor) else indices
        return X[rows], None if y_encoded is None else y_encoded[indices]

    def get_split_datasets(self, X: Any, y: Any = None, **fit_params: Any) -> Any:
        """skorch's split, with the labels of both parts encoded.

        skorch hands ``train_split`` the dataset built by :meth:`get_dataset`
        (labels already encoded), but ``predefined_split`` and a callable
        split may return datasets of their own, holding the user's labels.
        Each part is passed through :meth:`_encoded_dataset`, so the loss and
        ``valid_acc`` always compare predictions with indices into
        ``classes_``, and callbacks such as ``EarlyStopping`` or
        ``Checkpoint`` on ``valid_acc`` pick the right epochs.
        """
        split = getattr(self, "fit_split_", None)
        if split is None:
            train, valid = super().get_split_datasets(  # type: ignore[misc]
                X, y, **fit_params
            )
        else:  # computed once, before the teacher estimator was fitted
            plain, train, valid = split
            full: list[Any] = []  # the fit's dataset, built (and moved) once
            train, valid = (
                self._on_dataset(part, plain, X, y, full) for part in (train, valid)
            )
        converted: dict[int, Any] = {}  # one conversion per underlying dataset
        parts = []
        for name, part in (("training", train), ("validation", valid)):
            try:
                parts.append(
                    None if part is None else self._encoded_dataset(part, converted)
                )
            except ValueError as error:
                raise InputError(f"The {name} set: {error}") from error
        return tuple(parts)

    def _on_dataset(
        self, part: Any, plain: Any, X: Any, y: Any, full: list[Any]
    ) -> Any:
        """``part`` of the split of ``plain`` (the fit's data without teacher
        outputs), on the fit's dataset with them (built into ``full`` once)."""
        base, indices = unwrap_subsets(part)
        if base is not plain or is_dataset(X):
            return part  # a dataset of its own, or one without teacher outputs
        if not full:
            full.append(self.get_dataset(X, y))
        return full[0] if indices is None else Subset(full[0], indices.tolist())

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()  # type: ignore[misc,assignment]
        state.pop("fit_split_", None)  # one fit's split: never outlives it
        return state

    def _encoded_dataset(self, dataset: Any, converted: dict[int, Any]) -> Any:
        """``dataset`` with its labels as indices into ``classes_``.

        - an :class:`~projkd.training.batching.ArrayDataset` (or a ``Subset`` of one)
          was made by :meth:`get_dataset`: its labels are encoded already;
        - ``(X, y)`` arrays become an ``ArrayDataset`` exactly as the fit's own
          arrays do: checked, float32, labels encoded, teacher outputs cached;
        - a skorch ``Dataset`` (or a subclass) with labels is used as it is
          when they already are the indices (integer labels ``0..C-1`` in
          ``classes_``' order), else as a copy with its labels encoded (same
          class, same inputs);
        - any other dataset yields class indices (the documented contract for
          torch datasets) and is used as is.

        ``Subset`` wrappers, as a callable split may add, are kept.
        """
        base, indices = unwrap_subsets(dataset)
        if isinstance(base, ArrayDataset):
            return dataset  # made by get_dataset: encoded already
        if isinstance(base, tuple) and len(base) == 2:
            X, y = base
        elif isinstance(base, Dataset) and base.y is not None:
            X, y = base.X, base.y
        else:
            return dataset
        if id(base) not in converted:
            converted[id(base)] = self._labelled_data(X, y, base)
        encoded = converted[id(base)]
        if encoded is base:
            return dataset
        return encoded if indices is None else Subset(encoded, indices.tolist())

    def _labelled_data(self, X: Any, y: Any, base: Any) -> Any:
        """A dataset of ``X`` with the labels ``y`` encoded (see
        :meth:`_encoded_dataset`)."""
        if isinstance(base, tuple):
            if not isinstance(X, np.ndarray | torch.Tensor):
                raise InputTypeError(
                    "A validation set given as (X, y) needs X to be an array or a "
                    f"tensor, got {type(X).__name__}; wrap it in "
                    "skorch.dataset.Dataset."
                )
            X = check_input(X)
            check_input_shape(X, self.input_shape_, type(self).__name__)
            return self.get_dataset(X, check_target(y, len(X)))
        y = check_target(y, len(base))
        encoded_y = self._encode(y)
        if y.dtype.kind in "iu" and np.array_equal(encoded_y, y):
            return base  # the labels are the indices already
        encoded = copy.copy(base)
        encoded.y = encoded_y
        encoded.y_indexing = check_indexing(encoded.y)
        return encoded

    def _caches_teacher(self, X: Any) -> bool:
        if not self.uses_teacher():  # no loss term reads the teacher
            return False
        if self.cache_teacher == "auto":
            plain = self.train_transform is None and not self.hint_layers
            return plain and not is_dataset(X)
        return bool(self.cache_teacher)
