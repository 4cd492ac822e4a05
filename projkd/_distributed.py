"""Pieces of data-parallel training: process rank, sharded batches, collectives.

:class:`~projkd.accelerate.AcceleratedProjectorDistiller` builds on these.
Every process sees the same global batch order (a shared seed) and takes its
own slice of each global batch, so ``N`` processes with ``batch_size=b``
take, between them, exactly the steps one process takes with
``batch_size=N * b``. The helpers that ask about the process group work
before and without one (the launcher's environment variables, then 1 and 0).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .batching import ArrayBatches
from .features import forward_with_features

__all__ = [
    "FeatureModule",
    "launched_world_size",
    "OnDevice",
    "ShardedArrayBatches",
    "is_main_process",
    "process_index",
    "world_size",
]


def _group_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def launched_world_size(env: Mapping[str, str] | None = None) -> int:
    """Number of processes the run was launched with (torchrun/accelerate's
    ``WORLD_SIZE``; 1 for a plain launch).

    Examples
    --------
    >>> launched_world_size({"WORLD_SIZE": "4"})
    4
    >>> launched_world_size({})
    1
    """
    env = os.environ if env is None else env
    value = env.get("WORLD_SIZE", "1")
    try:
        return max(1, int(value))
    except ValueError:
        raise ValueError(
            f"WORLD_SIZE={value!r} is not a number of processes; unset it or "
            "launch with torchrun/accelerate launch."
        ) from None


def world_size() -> int:
    """The number of processes training together (1 when not launched so).

    Read from the process group once there is one, else from the
    ``WORLD_SIZE`` variable that ``torchrun`` and ``accelerate launch`` set.
    """
    if _group_ready():
        return torch.distributed.get_world_size()
    return launched_world_size()


def process_index() -> int:
    """This process's global rank (0 when not launched as one of several)."""
    if _group_ready():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Whether this process is the one that writes results, plots and logs.

    True in a plain single-process run; under ``torchrun``/``accelerate
    launch`` only for global rank 0.

    Examples
    --------
    >>> from projkd.accelerate import is_main_process
    >>> is_main_process()
    True
    """
    return process_index() == 0


def writes_outputs(estimator: Any) -> bool:
    """Whether ``estimator`` writes files from this process: always without
    an accelerator, else only on the accelerator's main process."""
    accelerator = getattr(estimator, "accelerator", None)
    return accelerator is None or bool(accelerator.is_main_process)


def all_gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every process, in rank order (``[obj]`` without a group)."""
    if not _group_ready() or torch.distributed.get_world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Process ``src``'s ``obj`` on every process."""
    if not _group_ready() or torch.distributed.get_world_size() == 1:
        return obj
    holder = [obj]
    torch.distributed.broadcast_object_list(holder, src=src)
    return holder[0]


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Give every process ``src``'s buffers (e.g. BatchNorm running statistics).

    DDP does this at the start of each training forward pass; after the last
    one every process has moved its buffers with its own shard.
    """
    if not _group_ready() or torch.distributed.get_world_size() == 1:
        return
    for buffer in module.buffers():
        torch.distributed.broadcast(buffer.data, src=src)


class FeatureModule(nn.Module):
    """A network whose forward pass can also return its penultimate features.

    This is what the accelerator wraps in DDP: DDP synchronises gradients
    only for work done inside its own ``forward``, so the features must come
    out of that call, not from ``forward_features`` called on the inner
    network beside it.

    Parameters
    ----------
    model : torch.nn.Module
    layer : str or None, default=None
        As in :func:`projkd.features.forward_with_features`.
    """

    def __init__(self, model: nn.Module, layer: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.layer = layer

    def forward(self, x: Tensor, features: bool = False) -> Any:
        """``model(x)``, or ``(logits, features)`` with ``features=True``."""
        if features:
            return forward_with_features(self.model, x, layer=self.layer)
        return self.model(x)


def _to_device(batch: Any, device: Any) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a NamedTuple
        return type(batch)(*(_to_device(item, device) for item in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(item, device) for item in batch)
    if isinstance(batch, dict):
        return {key: _to_device(value, device) for key, value in batch.items()}
    return batch


class OnDevice:
    """Iterate ``batches`` with every tensor moved to ``device``."""

    def __init__(self, batches: Any, device: Any) -> None:
        self.batches = batches
        self.device = device

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.batches:
            yield _to_device(batch, self.device)


class ShardedArrayBatches:
    """This process's part of each global batch of an :class:`ArrayBatches`.

    The global batch has ``batch_size * num_replicas`` samples, in the order
    every process computes alike (same seed, same epoch); process ``rank``
    takes its ``rank``-th slice. Every process gets the same number of
    batches, as DDP needs. A last, smaller global batch is split as evenly as
    possible; when it has fewer samples than there are processes it is
    dropped (at most ``num_replicas - 1`` samples of an epoch).

    Parameters
    ----------
    batches : ArrayBatches
        The single-process iterator; its ``batch_size`` is per process.
    num_replicas : int
    rank : int
    """

    def __init__(self, batches: ArrayBatches, num_replicas: int, rank: int) -> None:
        self.batches = batches
        self.num_replicas = num_replicas
        self.rank = rank

    @property
    def global_batch_size(self) -> int:
        return self.batches.batch_size * self.num_replicas

    def __len__(self) -> int:
        full, rest = divmod(len(self.batches.indices), self.global_batch_size)
        if self.batches.drop_last:
            return full
        return full + int(rest >= self.num_replicas)

    def __iter__(self) -> Iterator[Any]:
        n_batches = len(self)
        # the single-process order, on the data's device: every process
        # draws the same one (same seed, same epoch)
        order = self.batches.epoch_order()
        size = self.global_batch_size
        for start in range(0, n_batches * size, size):
            chunk = order[start : start + size]
            split = (
                chunk.tensor_split(self.num_replicas)
                if isinstance(chunk, Tensor)
                else np.array_split(chunk, self.num_replicas)
            )  # both: the first len % n parts one sample longer
            yield self.batches.dataset.batch(split[self.rank])
