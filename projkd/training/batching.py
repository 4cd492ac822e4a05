"""Batches drawn by slicing arrays, not per-sample ``__getitem__`` and collation.

For array or tensor input, :class:`~projkd.ProjectorDistiller` wraps the data
in an :class:`ArrayDataset` and iterates it with :class:`ArrayBatches`: one
fancy-indexing operation per batch instead of ``batch_size`` Python calls and
a collate.

Every batch is what skorch would give -- a tuple ``(X, y)`` of tensors -- so
callbacks, scorers and ``get_loss`` see skorch's types. What distillation
adds to a batch travels *beside* it: the precomputed teacher outputs (the
teacher cache) sliced with the same indices, or the view a step prepared
once for several students (:func:`~projkd.lockstep.fit_lockstep`), are kept
in :data:`PREPARED` as a :class:`PreparedBatch`, keyed by the identity of
the batch's input tensor, and go when that tensor goes
(:func:`keep_prepared`, :func:`prepared_for`).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from skorch.dataset import Dataset as SkorchDataset
from torch import Tensor
from torch.utils.data import Subset

__all__ = [
    "PREPARED",
    "ArrayBatches",
    "ArrayDataset",
    "DistillationOutput",
    "PreparedBatch",
    "TeacherOutputs",
    "TensorMap",
    "carry_prepared",
    "keep_prepared",
    "prepared_for",
]


class TeacherOutputs(NamedTuple):
    """The teacher's logits and penultimate features for every sample."""

    logits: Tensor
    features: Tensor


class PreparedBatch(NamedTuple):
    """A batch as the networks see it, with the teacher's outputs for it.

    ``inputs`` are ready for the student (augmented for training, in its
    memory format); the teacher's outputs are None where they were not
    computed (no loss term reads them); ``teacher_maps`` are the outputs of
    its hint layers, as they came (``()`` without hints). Kept beside a
    batch's input tensor (:func:`keep_prepared`), ``inputs`` that are that
    tensor itself are stored as None.
    """

    inputs: Tensor | None
    teacher_logits: Tensor | None
    teacher_features: Tensor | None
    teacher_maps: tuple[Tensor, ...] = ()


class DistillationOutput(NamedTuple):
    """Everything one distillation step computes beside the student's output.

    The estimator's training and validation steps return it under the key
    ``"distillation"`` of their step, so every callback's ``on_batch_end``
    receives it as the keyword ``distillation`` (``y_pred`` stays the
    student's output, as in skorch). What a switched-off loss term alone
    needs is not computed and is None (or ``()``): the projections without
    the feature term, the KD logits without the KD term, the teacher's
    outputs when no term reads them, the maps without hints. ``hint_maps``
    are the student's hint maps through their projectors and
    ``teacher_maps`` the teacher's, both ``(N, P, C)`` at the teacher's
    positions (:func:`~projkd.losses.as_positions`).
    """

    logits: Tensor
    features: Tensor
    projected: Tensor | None
    kd_logits: Tensor | None
    teacher_logits: Tensor | None
    teacher_features: Tensor | None
    hint_maps: tuple[Tensor, ...] = ()
    teacher_maps: tuple[Tensor, ...] = ()

    def float(self) -> DistillationOutput:
        """The same output with half-precision tensors cast to float32
        (itself when it has none: the common case, asked at every step)."""
        for field in self[:6]:
            if field is not None and field.dtype in _HALF:
                break
        else:
            if not (self.hint_maps or self.teacher_maps):
                return self
        return DistillationOutput._make(_float(field) for field in self)


_HALF = (torch.float16, torch.bfloat16)


def _float(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_float(item) for item in value)
    if value is not None and value.dtype in _HALF:
        return value.float()
    return value


class TensorMap:
    """A map keyed by the identity of tensors, whose entries go with them.

    An entry lives as long as its key tensor does (a weak reference removes
    it when the tensor is freed), so values put beside batches that nobody
    consumes never accumulate -- provided the value does not refer to its
    key: it would keep the key, and so itself, alive for ever (refused for a
    tuple that holds the key; see :func:`keep_prepared`). Thread-safe.

    Examples
    --------
    >>> import torch
    >>> beside = TensorMap()
    >>> x = torch.zeros(2)
    >>> beside.put(x, "prepared")
    >>> beside.get(x), beside.get(torch.zeros(2))
    ('prepared', None)
    >>> del x
    >>> len(beside)
    0
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref[Tensor], Any]] = {}
        self._lock = threading.Lock()

    def put(self, tensor: Tensor, value: Any) -> None:
        """Keep ``value`` beside ``tensor``.

        Raises
        ------
        ValueError
            If ``value`` is a tuple holding ``tensor`` itself.
        """
        if isinstance(value, tuple) and any(item is tensor for item in value):
            raise ValueError("a value kept beside a tensor must not hold it")
        key = id(tensor)
        entries, lock = self._entries, self._lock

        def forget(_: Any) -> None:
            with lock:
                entries.pop(key, None)

        with lock:
            entries[key] = (weakref.ref(tensor, forget), value)

    def get(self, tensor: Any) -> Any:
        """The value kept beside ``tensor`` (None if there is none)."""
        entry = self._entries.get(id(tensor))
        if entry is None or entry[0]() is not tensor:
            return None
        return entry[1]

    def discard(self, tensor: Any) -> None:
        """Forget the value kept beside ``tensor`` (if any), now."""
        with self._lock:
            entry = self._entries.get(id(tensor))
            if entry is not None and entry[0]() is tensor:
                del self._entries[id(tensor)]

    def __len__(self) -> int:
        return len(self._entries)


#: the :class:`PreparedBatch` of each batch in flight, by its input tensor
#: (through :func:`keep_prepared` and :func:`prepared_for`)
PREPARED = TensorMap()


def keep_prepared(x: Tensor, prepared: PreparedBatch) -> None:
    """Keep ``prepared`` beside the batch's input tensor ``x`` until ``x`` is
    freed (inputs that are ``x`` itself are stored as None: the entry must
    not keep its key alive)."""
    if prepared.inputs is x:
        prepared = prepared._replace(inputs=None)
    PREPARED.put(x, prepared)


def prepared_for(x: Any) -> PreparedBatch | None:
    """The :class:`PreparedBatch` kept beside ``x`` (None if there is none)."""
    prepared = PREPARED.get(x)
    if prepared is not None and prepared.inputs is None:
        return prepared._replace(inputs=x)
    return prepared


def carry_prepared(batch: Any, moved: Any) -> Any:
    """``moved`` (``batch`` moved to a device) with the :class:`PreparedBatch`
    kept beside ``batch``'s inputs moved beside ``moved``'s.

    Parameters
    ----------
    batch, moved : tuple
        ``(X, y)`` before and after the move.
    """
    if not (isinstance(batch, tuple | list) and batch):
        return moved
    prepared = PREPARED.get(batch[0])
    if prepared is not None:
        device = moved[0].device
        # inputs stored as None are the batch's own, moved already
        inputs, logits, features, maps = (_to(field, device) for field in prepared)
        keep_prepared(moved[0], PreparedBatch(inputs, logits, features, maps))
    return moved


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, tuple):
        return tuple(_to(item, device) for item in value)
    return None if value is None else value.to(device, non_blocking=True)


def _as_tensor(values: Any) -> Tensor:
    """A tensor view of ``values``; a tensor that requires grad is detached, so
    training never builds a graph back to (or writes ``.grad`` into) the
    user's data."""
    if isinstance(values, Tensor):
        return values.detach()
    return torch.from_numpy(np.asarray(values))


class ArrayDataset(SkorchDataset):
    """Inputs, encoded targets and (optionally) cached teacher outputs.

    A skorch :class:`~skorch.dataset.Dataset` of tensors (``X``, ``y``), so
    that what skorch reads from a dataset -- ``EpochScoring``'s data and
    targets, ``data_from_dataset`` -- it finds here as in its own.

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
        super().__init__(_as_tensor(X), None if y is None else _as_tensor(y))
        self.teacher_outputs = teacher_outputs

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        y = self.y[index] if self.y is not None else torch.zeros(())
        return self.X[index], y

    @property
    def device(self) -> torch.device:
        """Where the inputs are stored (batches are sliced there)."""
        return self.X.device

    def batch(self, index: np.ndarray | Tensor) -> tuple[Tensor, Tensor | None]:
        """The samples at ``index``, as one batch ``(X, y)``; with teacher
        outputs, their rows are kept beside ``X`` (:data:`PREPARED`)."""
        # on the data's device: a sharded order split on the host indexes data
        # held on the GPU (index_select wants both on one device)
        positions = torch.as_tensor(index, device=self.X.device)
        # index_select: the same gather as ``X[positions]``, at half the
        # host overhead (no advanced-indexing dispatch)
        X = self.X.index_select(0, positions)
        y = None if self.y is None else self.y.index_select(0, positions)
        if self.teacher_outputs is not None:
            logits, features = self.teacher_outputs
            keep_prepared(
                X,
                PreparedBatch(
                    X,
                    logits.index_select(0, positions),
                    features.index_select(0, positions),
                ),
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
