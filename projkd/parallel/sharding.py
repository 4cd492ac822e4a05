"""This process's part of the data: sharded array batches.

Every process sees the same global batch order (a shared seed) and takes its
own slice of each global batch, so ``N`` processes with ``batch_size=b``
take, between them, exactly the steps one process takes with
``batch_size=N * b``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from torch import Tensor

from ..training.batching import ArrayBatches, carry_prepared
from ..training.device import to_device

__all__ = ["OnDevice", "ShardedArrayBatches"]


class OnDevice:
    """Iterate ``batches`` with every tensor moved to ``device``
    (:func:`~projkd.training.device.to_device`, non-blocking)."""

    def __init__(self, batches: Any, device: Any) -> None:
        self.batches = batches
        self.device = device

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.batches:
            moved = to_device(batch, self.device, non_blocking=True)
            yield carry_prepared(batch, moved)


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
