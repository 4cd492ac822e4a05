"""Batches drawn by slicing arrays, not per-sample ``__getitem__`` and collation.

For array or tensor input, :class:`~projkd.ProjectorDistiller` wraps the data
in an :class:`ArrayDataset` and iterates it with :class:`ArrayBatches`: one
fancy-indexing operation per batch instead of ``batch_size`` Python calls and
a collate. Precomputed teacher outputs (the teacher cache) are sliced with
the same indices and travel with the inputs as a :class:`CachedTeacherBatch`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

__all__ = [
    "ArrayBatches",
    "ArrayDataset",
    "CachedTeacherBatch",
    "DistillationOutput",
    "TeacherOutputs",
]


class TeacherOutputs(NamedTuple):
    """The teacher's logits and penultimate features for every sample."""

    logits: Tensor
    features: Tensor


class CachedTeacherBatch(NamedTuple):
    """A batch of inputs with the teacher's outputs for it, looked up, not run."""

    inputs: Tensor
    teacher_logits: Tensor
    teacher_features: Tensor


class DistillationOutput(NamedTuple):
    """Everything one distillation forward pass produces.

    The student's logits come first: skorch takes the first element of a
    tuple output as the prediction. What a switched-off loss term alone needs
    is not computed and is None: the projections without the feature term,
    the KD logits without the KD term, the teacher's outputs when neither
    term is on.
    """

    logits: Tensor
    features: Tensor
    projected: Tensor | None
    kd_logits: Tensor | None
    teacher_logits: Tensor | None
    teacher_features: Tensor | None

    def float(self) -> DistillationOutput:
        """The same output with half-precision tensors cast to float32."""
        if not any(t is not None and t.dtype in _HALF for t in self):
            return self
        return DistillationOutput._make(None if t is None else t.float() for t in self)


_HALF = (torch.float16, torch.bfloat16)


def _as_tensor(values: Any) -> Tensor:
    """A tensor view of ``values``; a tensor that requires grad is detached, so
    training never builds a graph back to (or writes ``.grad`` into) the
    user's data."""
    if isinstance(values, Tensor):
        return values.detach()
    return torch.from_numpy(np.asarray(values))


class ArrayDataset(Dataset):
    """Inputs, encoded targets and (optionally) cached teacher outputs.

    Parameters
    ----------
    X : ndarray or torch.Tensor of shape (N, ...)
    y : ndarray or torch.Tensor of shape (N,) or None
    teacher_outputs : TeacherOutputs or None
        Per-sample teacher outputs aligned with ``X``.
    """

    def __init__(
        self, X: Any, y: Any = None, teacher_outputs: TeacherOutputs | None = None
    ) -> None:
        self.X = _as_tensor(X)
        self.y = None if y is None else _as_tensor(y)
        self.teacher_outputs = teacher_outputs

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        batch_X, batch_y = self.batch(np.asarray([index]))
        x = (
            CachedTeacherBatch(*(t[0] for t in batch_X))
            if isinstance(batch_X, CachedTeacherBatch)
            else batch_X[0]
        )
        return x, (torch.zeros(()) if batch_y is None else batch_y[0])

    @property
    def device(self) -> torch.device:
        """Where the inputs are stored (batches are sliced there)."""
        return self.X.device

    def batch(self, index: np.ndarray | Tensor) -> tuple[Any, Tensor | None]:
        """The samples at ``index``, as one batch."""
        # on the data's device: a sharded order split on the host indexes data
        # held on the GPU (index_select wants both on one device)
        positions = torch.as_tensor(index, device=self.X.device)
        # index_select: the same gather as ``X[positions]``, at half the
        # host overhead (no advanced-indexing dispatch)
        X: Any = self.X.index_select(0, positions)
        y = None if self.y is None else self.y.index_select(0, positions)
        if self.teacher_outputs is not None:
            logits, features = self.teacher_outputs
            X = CachedTeacherBatch(
                X,
                logits.index_select(0, positions),
                features.index_select(0, positions),
            )
        return X, y


def unwrap_subsets(dataset: Any) -> tuple[Any, np.ndarray | None]:
    """The dataset under (nested) ``Subset`` wrappers and the indices into it
    that they select (None: no wrapper)."""
    indices: np.ndarray | None = None
    while isinstance(dataset, Subset):
        subset = np.asarray(dataset.indices, dtype=np.int64)
        indices = subset if indices is None else subset[indices]
        dataset = dataset.dataset
    return dataset, indices


def array_source(dataset: Any) -> tuple[ArrayDataset, np.ndarray] | None:
    """The :class:`ArrayDataset` behind ``dataset`` and the indices it covers.

    Handles an ``ArrayDataset`` and (nested) ``Subset``s of one, as skorch's
    ``ValidSplit`` makes; returns None for any other dataset.
    """
    dataset, indices = unwrap_subsets(dataset)
    if not isinstance(dataset, ArrayDataset):
        return None
    if indices is None:
        indices = np.arange(len(dataset))
    return dataset, indices


class ArrayBatches:
    """Iterate an :class:`ArrayDataset` in batches of sliced arrays.

    Parameters
    ----------
    dataset : ArrayDataset
    indices : ndarray of int
        The samples to iterate (all of them, or a split's subset).
    batch_size : int
    shuffle : bool, default=False
        A new permutation each epoch.
    drop_last : bool, default=False
    seed : int or None, default=None
        With a seed, epoch ``e``'s permutation depends on ``(seed, e)`` alone,
        so a run resumed from a checkpoint at epoch ``e`` shuffles exactly as
        the uninterrupted run; without, torch's global generator is used.
    first_epoch : int, default=0
        The number of epochs already trained (when resuming).
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        indices: np.ndarray,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int | None = None,
        first_epoch: int = 0,
    ) -> None:
        self.dataset = dataset
        self.indices = indices
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = first_epoch

    def __len__(self) -> int:
        n, size = len(self.indices), self.batch_size
        return n // size if self.drop_last else -(-n // size)

    def __iter__(self) -> Iterator[tuple[Any, Tensor | None]]:
        return self._slices(self.epoch_order())

    def epoch_order(self) -> Any:
        """The sample order of the next epoch; advances the epoch.

        With the data on an accelerator the order is a tensor there (indices,
        permutation and slicing stay on the device, so drawing a batch never
        waits for the host); otherwise an array.
        """
        device = self.dataset.device
        order: Any
        if device.type != "cpu":
            order = torch.as_tensor(self.indices, device=device)
            if self.shuffle:
                permutation = torch.randperm(
                    len(order), device=device, generator=self._generator(device)
                )
                order = order[permutation]
        else:
            order = self.indices
            if self.shuffle:
                generator = self._generator("cpu")
                permutation = torch.randperm(len(order), generator=generator)
                order = order[permutation.numpy()]
        self.epoch += 1
        return order

    def _generator(self, device: Any) -> torch.Generator | None:
        if self.seed is None:
            return None
        state = np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)
        return torch.Generator(device).manual_seed(int(state[0]))

    def _slices(self, order: Any) -> Iterator[tuple[Any, Tensor | None]]:
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield self.dataset.batch(order[start : start + self.batch_size])
