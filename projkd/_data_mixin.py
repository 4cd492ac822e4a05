"""How ProjectorDistiller turns data into batches (a skorch mixin)."""

from __future__ import annotations

from numbers import Integral
from typing import Any

import torch
from skorch.dataset import Dataset
from skorch.utils import is_dataset
from torch.utils.data import DataLoader

from .batching import ArrayBatches, ArrayDataset, array_source
from .device_data import Prefetcher, nbytes, resolve_data_device, to_device
from .teacher_cache import cached_teacher_outputs

__all__ = ["ArrayDataMixin"]

_SLICEABLE = {"batch_size", "shuffle", "drop_last"}


class ArrayDataMixin:
    """skorch's ``get_dataset``/``get_iterator`` for arrays sliced into batches.

    Arrays and tensors become an :class:`~projkd.batching.ArrayDataset` of
    inputs, *encoded* labels and, when training with the teacher cache, the
    teacher's outputs, iterated by :class:`~projkd.batching.ArrayBatches`;
    any other dataset, or a custom iterator, goes through skorch unchanged.
    The host class provides ``_encode``, ``_compute_device`` and the teacher
    parameters.
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
    _compute_device: Any
    _encode: Any
    get_params_for: Any

    def check_data(self, X: Any, y: Any = None) -> None:
        """No-op: ``fit`` has already checked the data and set ``classes_``."""

    def get_dataset(self, X: Any, y: Any = None) -> Any:
        """Arrays and tensors become an :class:`~projkd.batching.ArrayDataset`
        of inputs, *encoded* labels and, when training with the teacher cache,
        the teacher's outputs; a Dataset is used as is."""
        if (
            is_dataset(X)
            or self.dataset is not Dataset
            or self.get_params_for("dataset")
        ):
            return super().get_dataset(X, y)  # type: ignore[misc]
        outputs = None
        if y is not None:
            y = self._encode(y)
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
        # moved once per fit (when it fits), so that shuffling, slicing and
        # the cache lookups of every epoch happen on the device
        device = resolve_data_device(
            self.data_device, self._compute_device(), nbytes(X, y, outputs)
        )
        if self.data_device == "auto" and isinstance(X, torch.Tensor):
            if X.device.type != "cpu":
                device = X.device  # never copied back to the host

        return ArrayDataset(
            to_device(X, device), to_device(y, device), to_device(outputs, device)
        )

    def _caches_teacher(self, X: Any) -> bool:
        if self.cache_teacher == "auto":
            return self.train_transform is None and not is_dataset(X)
        return bool(self.cache_teacher)

    def get_iterator(self, dataset: Any, training: bool = False) -> Any:
        """Batches sliced from arrays (:class:`~projkd.batching.ArrayBatches`)
        when the data are arrays and the iterator is skorch's default
        ``DataLoader`` with at most ``batch_size``, ``shuffle`` and
        ``drop_last`` set; otherwise skorch's iterator."""
        source = array_source(dataset)
        prefix = "iterator_train" if training else "iterator_valid"
        iterator = self.iterator_train if training else self.iterator_valid
        kwargs = self.get_params_for(prefix)
        if source is None or iterator is not DataLoader or set(kwargs) - _SLICEABLE:
            return super().get_iterator(dataset, training=training)  # type: ignore[misc]
        batch_size = kwargs.get("batch_size", self.batch_size)
        array_dataset, indices = source
        batches = ArrayBatches(
            array_dataset,
            indices,
            batch_size=len(indices) if batch_size == -1 else batch_size,
            shuffle=kwargs.get("shuffle", False),
            drop_last=kwargs.get("drop_last", False),
            seed=int(self.random_state)
            if isinstance(self.random_state, Integral)
            else None,
            first_epoch=len(self.history) if self.history else 0,
        )
        device = torch.device(self._compute_device())
        if device.type == "cuda" and array_dataset.device.type == "cpu":
            return Prefetcher(batches, device)  # pinned, non-blocking, one ahead
        return batches
