"""The processes of a parallel launch: how many, which one this is, collectives.

The helpers that ask about the process group work before and without one
(the launcher's environment variables, then 1 and 0).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = [
    "all_gather_objects",
    "broadcast_buffers",
    "broadcast_object",
    "is_main_process",
    "launched_world_size",
    "process_index",
    "world_size",
    "writes_outputs",
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
    >>> from projkd.parallel import is_main_process
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
