"""Keeping the accelerator busy: data on the device, prefetched copies, and
training statistics that stay on the device until the epoch ends.

Three habits of fast GPU trainers (e.g. airbench) in small pieces:

* :func:`resolve_data_device` decides where the training arrays live. With
  ``data_device="auto"`` they are moved to the compute device once per fit
  when they take less than :data:`DEVICE_MEMORY_FRACTION` of its free
  memory; shuffling, slicing, augmentation and the teacher cache then all
  happen there, and no batch crosses the PCIe bus.
* :class:`Prefetcher` is the fallback when the data stay on the host: each
  batch is copied from pinned memory with a non-blocking copy on a side
  stream, one batch ahead, so the copy overlaps the previous step.
* :class:`DeviceStats` accumulates per-batch statistics (loss terms,
  accuracy) as device tensors and reads them back in one transfer at the end
  of the epoch, instead of one host sync per batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .batching import PREPARED, carry_prepared
from .precision import device_type

__all__ = [
    "DEVICE_MEMORY_FRACTION",
    "DeviceStats",
    "Prefetcher",
    "to_channels_last",
    "cudnn_benchmark",
    "nbytes",
    "resolve_data_device",
    "to_device",
]

#: ``data_device="auto"`` puts the training data on the compute device when
#: they take less than this fraction of its *free* memory, leaving the rest
#: for activations, gradients and the optimizer state.
DEVICE_MEMORY_FRACTION = 0.25


def nbytes(*arrays: Any) -> int:
    """Total size in bytes of arrays and tensors (None entries count 0)."""
    total = 0
    for array in arrays:
        if array is None:
            continue
        if isinstance(array, Tensor):
            total += array.numel() * array.element_size()
        elif isinstance(array, tuple):
            total += nbytes(*array)
        else:
            total += np.asarray(array).nbytes
    return total


def _free_memory(device: torch.device) -> int | None:
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return None


def resolve_data_device(
    data_device: Any, compute_device: Any, size: int
) -> torch.device:
    """Where training data of ``size`` bytes should live.

    Parameters
    ----------
    data_device : {"auto"}, str or torch.device
        ``"auto"``: the compute device when it is not the CPU and the data
        take under :data:`DEVICE_MEMORY_FRACTION` of its free memory, else
        the CPU. Anything else is used as given.
    compute_device : str, torch.device or None
        Where the networks run (None is the CPU).
    size : int
        Bytes of the data to place.

    Returns
    -------
    device : torch.device

    Examples
    --------
    >>> resolve_data_device("auto", "cpu", 10**9)
    device(type='cpu')
    """
    if data_device != "auto":
        return torch.device(data_device)
    target = torch.device(compute_device if compute_device is not None else "cpu")
    if target.type == "cpu":
        return target
    free = _free_memory(target)
    if free is not None and size < DEVICE_MEMORY_FRACTION * free:
        return target
    return torch.device("cpu")


def to_device(values: Any, device: Any, *, non_blocking: bool = False) -> Any:
    """``values`` with every tensor and numeric array in it on ``device``.

    The one move of a batch (or of a fit's arrays) to a device: used by
    :class:`Prefetcher`, :class:`~projkd.parallel.sharding.OnDevice` and the
    estimators' datasets.

    Parameters
    ----------
    values : None, tensor, ndarray, or a tuple, NamedTuple, list or dict of them
        Nested containers are rebuilt with the same type (a NamedTuple stays
        one, a dict becomes a plain dict); a numeric ndarray becomes a tensor
        (without a copy on the host); anything else is returned as it is.
    device : str or torch.device
    non_blocking : bool, default=False
        Copy host tensors asynchronously. To a CUDA device they are pinned
        first, since a copy from pageable memory blocks anyway.

    Returns
    -------
    values
        A tensor already on ``device`` is returned as is: never copied back
        and forth.

    Examples
    --------
    >>> import numpy as np, torch
    >>> moved = to_device({"x": np.ones(2), "y": [torch.zeros(1), None]}, "cpu")
    >>> type(moved["x"]).__name__, moved["y"][1]
    ('Tensor', None)
    """
    if not isinstance(device, torch.device):
        device = torch.device(device)
    if isinstance(values, Tensor):
        if non_blocking and device.type == "cuda" and values.device.type == "cpu":
            if not values.is_pinned():
                values = values.pin_memory()
        return values.to(device, non_blocking=non_blocking)
    if isinstance(values, np.ndarray) and values.dtype.kind in "biufc":
        return to_device(torch.from_numpy(values), device, non_blocking=non_blocking)
    if isinstance(values, tuple | list):
        items = [to_device(v, device, non_blocking=non_blocking) for v in values]
        if hasattr(values, "_fields"):  # a NamedTuple
            return type(values)(*items)
        return type(values)(items)
    if isinstance(values, dict):
        return {
            key: to_device(value, device, non_blocking=non_blocking)
            for key, value in values.items()
        }
    return values


def to_channels_last(value: Any) -> Any:
    """``value`` in ``torch.channels_last`` memory format, where it applies.

    A module is converted in place (its 4-D parameters and buffers) and
    returned; a 4-D tensor -- an image batch ``(N, C, H, W)`` -- is returned
    in that format (itself when it already is); anything else is returned as
    it is. The one conversion for the estimators' networks and batches.

    Examples
    --------
    >>> import torch
    >>> to_channels_last(torch.ones(2, 3, 4, 4)).is_contiguous(
    ...     memory_format=torch.channels_last)
    True
    """
    if isinstance(value, torch.nn.Module):
        return value.to(memory_format=torch.channels_last)
    if isinstance(value, Tensor) and value.ndim == 4:
        return value.contiguous(memory_format=torch.channels_last)
    return value


def _record(value: Any, stream: Any) -> None:
    """Mark the tensors of a batch as used on ``stream`` (the caching
    allocator must not reuse their memory before that stream is done)."""
    if isinstance(value, Tensor):
        value.record_stream(stream)
    elif isinstance(value, tuple | list | dict):
        for item in value.values() if isinstance(value, dict) else value:
            _record(item, stream)


class Prefetcher:
    """Iterate batches already copied to ``device``, one batch ahead.

    Host tensors are pinned and copied with ``non_blocking=True`` on a side
    CUDA stream while the previous batch trains; the consuming stream waits
    for the copy only when it uses the batch.

    Parameters
    ----------
    batches : iterable
        Batches of tensors (or of tuples, lists and dicts of them), on the
        host; moved by :func:`to_device`.
    device : torch.device
        A CUDA device.

    Examples
    --------
    >>> import torch
    >>> batches = [(torch.ones(2), torch.zeros(2))]
    >>> len(Prefetcher(batches, torch.device("cpu")))
    1
    """

    def __init__(self, batches: Iterable[Any], device: torch.device) -> None:
        self.batches = batches
        self.device = device

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        if self.device.type != "cuda":
            for batch in self.batches:
                yield carry_prepared(batch, to_device(batch, self.device))
            return
        stream = torch.cuda.Stream(self.device)
        iterator = iter(self.batches)

        def load() -> Any:
            batch = next(iterator, None)
            if batch is None:
                return None
            with torch.cuda.stream(stream):
                moved = to_device(batch, self.device, non_blocking=True)
                return carry_prepared(batch, moved)

        upcoming = load()
        while upcoming is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(stream)
            _record(upcoming, current)
            if isinstance(upcoming, tuple | list) and upcoming:
                _record(PREPARED.get(upcoming[0]), current)  # None: nothing
            batch, upcoming = upcoming, load()
            yield batch


class DeviceStats:
    """Per-batch statistics kept on the device, read back once.

    :meth:`add` stores a 1-D tensor of values for a batch without reading
    it; :meth:`read` moves all of them to the host in a single transfer.

    Examples
    --------
    >>> import torch
    >>> stats = DeviceStats()
    >>> stats.add(3, torch.tensor([1.0, 2.0]))
    >>> stats.read()
    [(3, [1.0, 2.0])]
    """

    def __init__(self) -> None:
        self.keys: list[Any] = []
        self.values: list[Tensor] = []

    def add(self, key: Any, values: Tensor) -> None:
        """Remember ``values`` (a 1-D tensor) under ``key``."""
        self.keys.append(key)
        self.values.append(values.detach())

    def read(self) -> list[tuple[Any, list[float]]]:
        """All ``(key, values)`` in order, with one device-to-host transfer."""
        return DeviceStats.read_all([self])[0]

    @staticmethod
    def read_all(stats: list[DeviceStats]) -> list[list[tuple[Any, list[float]]]]:
        """:meth:`read` of each of ``stats``, with one transfer for all.

        Examples
        --------
        >>> import torch
        >>> a, b = DeviceStats(), DeviceStats()
        >>> a.add(0, torch.tensor([1.0, 2.0])); b.add(0, torch.tensor([3.0]))
        >>> DeviceStats.read_all([a, b])
        [[(0, [1.0, 2.0])], [(0, [3.0])]]
        """
        tensors = [v.float().reshape(-1) for s in stats for v in s.values]
        if not tensors:
            return [[] for _ in stats]
        flat = torch.cat(tensors).tolist()
        out, start = [], 0
        for s in stats:
            rows = []
            for key, v in zip(s.keys, s.values, strict=True):
                rows.append((key, flat[start : start + v.numel()]))
                start += v.numel()
            out.append(rows)
        return out


@contextlib.contextmanager
def cudnn_benchmark(device: Any) -> Iterator[None]:
    """Turn on ``torch.backends.cudnn.benchmark`` for CUDA fits, restoring
    the previous setting afterwards (input shapes are fixed in training, so
    cuDNN's autotuned kernels pay off after the first batches)."""
    if device_type(device) != "cuda":
        yield
        return
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous
