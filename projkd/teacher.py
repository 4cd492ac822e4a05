"""The frozen teacher.

The teacher is read-only during distillation: it runs without gradients, in
eval mode (its BatchNorm statistics never move), and is never handed to the
optimizer. The user's teacher object must come out of ``fit`` exactly as it
went in: weights, buffers, ``training`` flag, ``requires_grad`` flags, device.
"""

from __future__ import annotations

import copy
from itertools import chain

import torch
from torch import nn

__all__ = ["freeze_teacher", "is_frozen_on"]


def is_frozen_on(teacher: nn.Module, device: str | torch.device | None) -> bool:
    """Whether ``teacher`` can be used as is: all in eval mode, all on ``device``.

    ``device=None`` accepts any device (skorch's "do not move" setting).
    """
    if any(module.training for module in teacher.modules()):
        return False
    if device is None:
        return True
    target = torch.device(device)
    tensors = chain(teacher.parameters(), teacher.buffers())
    return all(_same_device(t.device, target) for t in tensors)


def freeze_teacher(teacher: nn.Module, device: str | torch.device | None) -> nn.Module:
    """Return a module that runs ``teacher`` frozen on ``device``.

    ``teacher`` itself is returned when it already is in eval mode on
    ``device`` (sharing costs no memory, and nothing will modify it);
    otherwise a deep copy, switched to eval mode, with gradients off, moved to
    ``device``. The user's object is never modified.

    Parameters
    ----------
    teacher : torch.nn.Module
    device : str, torch.device or None
        ``None`` leaves the teacher where it is.

    Returns
    -------
    frozen : torch.nn.Module
    """
    if not isinstance(teacher, nn.Module):
        raise TypeError(
            f"teacher must be a torch.nn.Module, got {type(teacher).__name__}."
        )
    if is_frozen_on(teacher, device):
        return teacher
    frozen = copy.deepcopy(teacher).eval().requires_grad_(False)
    return frozen if device is None else frozen.to(device)


def _same_device(actual: torch.device, target: torch.device) -> bool:
    if actual.type != target.type:
        return False
    return target.index is None or actual.index == target.index
