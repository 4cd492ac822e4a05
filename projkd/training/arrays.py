"""Arrays into batches for any skorch net: the one place that does it.

:class:`ArrayBatchesMixin` gives a skorch net projkd's array batches
(:class:`~projkd.training.batching.ArrayBatches`: one slice per batch, no
per-sample collation, an order shuffled per ``(random_state, epoch)`` so a
resumed run draws as the uninterrupted one), the data placed by
``data_device`` (:func:`~projkd.training.device.resolve_data_device`) and,
when they stay on the host of a CUDA net, prefetched one batch ahead
(:class:`~projkd.training.device.Prefetcher`). The distiller
(:class:`~projkd.estimator.data.ArrayDataMixin`) and the teacher's net
(:class:`~projkd.teacher.training.TeacherNet`) both use it.
"""

from __future__ import annotations

import warnings
from numbers import Integral
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .batching import ArrayBatches, ArrayDataset, array_source
from .device import Prefetcher, nbytes, resolve_data_device, to_device

__all__ = ["SLICEABLE", "ArrayBatchesMixin", "BatchFetch", "as_fetched"]

#: the ``DataLoader`` arguments that batches sliced from arrays honour
SLICEABLE = {"batch_size", "shuffle", "drop_last"}


class BatchFetch(Dataset):
    """An :class:`~projkd.training.batching.ArrayDataset` (or a ``Subset`` of
    one) that a ``DataLoader`` fetches a batch at a time.

    torch's loader calls ``__getitems__`` with a batch's indices when the
    dataset has it: here, one slice of the arrays
    (:meth:`~projkd.training.batching.ArrayDataset.batch`), with what
    travels beside it, instead of a sample at a time and a collate. Pair it
    with ``collate_fn=as_fetched``. In worker processes the batches are
    sliced there, and what travels beside them stays there (the teacher
    then runs on each batch).
    """

    def __init__(self, dataset: Any) -> None:
        source = array_source(dataset)
        if source is None:
            raise TypeError(f"{type(dataset).__name__} is not an ArrayDataset.")
        self.dataset, self.indices = source

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[int(self.indices[index])]

    def __getitems__(self, positions: list[int]) -> Any:
        return self.dataset.batch(self.indices[positions])


def as_fetched(batch: Any) -> Any:
    """The ``collate_fn`` of a :class:`BatchFetch`: its batches come whole."""
    return batch


class ArrayBatchesMixin:
    """skorch's ``get_iterator`` with array batches (a skorch mixin).

    The host provides ``batch_size``, ``random_state``, ``data_device``,
    ``history``, the iterator parameters and ``_compute_device``; it may
    override :meth:`training_batches` (a process's shard) and
    :meth:`needs_pairs` (modules that cannot take a batch of one sample).
    """

    # provided by the host (a skorch net)
    batch_size: int
    random_state: Any
    data_device: Any
    history: Any
    iterator_train: Any
    iterator_valid: Any
    get_params_for: Any
    _compute_device: Any

    def array_dataset(self, X: Any, y: Any = None, teacher_outputs: Any = None) -> Any:
        """An :class:`~projkd.training.batching.ArrayDataset` of ``X``, ``y``
        (and teacher outputs), placed by ``data_device``: moved once per fit
        when it fits on the device, so that shuffling, slicing and the cache
        lookups of every epoch happen there; a tensor already on an
        accelerator stays there."""
        device = resolve_data_device(
            self.data_device, self._compute_device(), nbytes(X, y, teacher_outputs)
        )
        if self.data_device == "auto" and isinstance(X, torch.Tensor):
            if X.device.type != "cpu":
                device = X.device  # never copied back to the host
        return ArrayDataset(
            to_device(X, device),
            to_device(y, device),
            to_device(teacher_outputs, device),
        )

    def get_iterator(self, dataset: Any, training: bool = False) -> Any:
        """Batches sliced from arrays (:class:`~projkd.training.batching.ArrayBatches`)
        when the data are an ``ArrayDataset`` and the iterator is skorch's
        default ``DataLoader`` with at most ``batch_size``, ``shuffle`` and
        ``drop_last`` set; otherwise skorch's iterator. Training batches go
        through :meth:`training_batches`; host arrays feeding a CUDA device
        are prefetched. A last training batch of one sample is dropped when
        the net cannot take it (:meth:`needs_pairs`)."""
        prefix = "iterator_train" if training else "iterator_valid"
        kwargs = self.get_params_for(prefix)
        batch_size = kwargs.get("batch_size", self.batch_size)
        size = len(dataset) if batch_size == -1 else batch_size
        drop_last = kwargs.get("drop_last", False) or (
            training and self._drops_lone_sample(len(dataset), size)
        )
        source = array_source(dataset)
        iterator = self.iterator_train if training else self.iterator_valid
        if source is None or iterator is not DataLoader or set(kwargs) - SLICEABLE:
            if source is not None and "collate_fn" not in kwargs:
                # a loader of its own (workers, a sampler): fetched a batch at
                # a time all the same, so the teacher cache travels along
                dataset = BatchFetch(dataset)
                kwargs = {**kwargs, "collate_fn": as_fetched}
            kwargs = {**kwargs, "batch_size": size}
            if drop_last:
                kwargs["drop_last"] = True
            return iterator(dataset, **kwargs)
        array_dataset, indices = source
        seed = self.random_state
        batches = ArrayBatches(
            array_dataset,
            indices,
            batch_size=size,
            shuffle=kwargs.get("shuffle", False),
            drop_last=drop_last,
            seed=int(seed) if isinstance(seed, Integral) else None,
            first_epoch=len(self.history) if self.history else 0,
        )
        if training:  # this process's share, before any copy to the device
            batches = self.training_batches(batches)
        device = torch.device(self._compute_device())
        if device.type == "cuda" and array_dataset.device.type == "cpu":
            return Prefetcher(batches, device)  # pinned, non-blocking, one ahead
        return batches

    def training_batches(self, batches: ArrayBatches) -> Any:
        """The training batches this process iterates: all of ``batches``.

        A hook: :class:`~projkd.parallel.DataParallelMixin` returns this
        process's shard of every global batch. :meth:`get_iterator` calls it
        before it wraps the batches in a
        :class:`~projkd.training.device.Prefetcher`, so host-resident data are
        sharded on a GPU too.
        """
        return batches

    def needs_pairs(self) -> bool:
        """Whether a training batch of one sample would fail: a
        :class:`torch.nn.BatchNorm1d` in training (the host adds its own
        reasons, such as DIST's intra-class relation)."""
        return any(
            isinstance(module, nn.BatchNorm1d)
            for name in getattr(self, "_modules", ())
            if isinstance(getattr(self, name + "_", None), nn.Module)
            for module in getattr(self, name + "_").modules()
        )

    def _drops_lone_sample(self, n_samples: int, batch_size: int) -> bool:
        """Whether to drop a last training batch of one sample, warning
        (:meth:`get_iterator` runs once per fit)."""
        if n_samples % batch_size != 1 or n_samples == 1 or not self.needs_pairs():
            return False
        warnings.warn(
            f"The last training batch would hold 1 of {n_samples} samples "
            f"(batch_size={batch_size}), which {type(self).__name__} cannot train "
            "on (BatchNorm1d or a batch statistic); it is dropped each epoch. "
            "Pass iterator_train__drop_last=True, or another batch_size, to "
            "silence this.",
            UserWarning,
            stacklevel=3,
        )
        return True
