"""Saving and loading a teacher's weights (plain ``state_dict`` files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["load_teacher", "save_teacher"]


def save_teacher(model: nn.Module, path: str | Path) -> None:
    """Save a teacher's weights as a plain ``state_dict`` (no pickled code).

    The file loads back with :func:`load_teacher` or
    ``projkd.models.get_model(name, weights=path)``.
    """
    torch.save(model.state_dict(), path)


def load_teacher(
    model: nn.Module, path: str | Path, *, device: Any = "cpu"
) -> nn.Module:
    """Load a teacher checkpoint into ``model``, in eval mode.

    Reads the files of :func:`save_teacher` and the checkpoints published
    with the CIFAR-100 benchmark: a plain ``state_dict``, or a training
    checkpoint with the weights under ``"model"`` (RepDistiller, PEFD and
    mdistiller save ``{"epoch", "model", "accuracy", "optimizer"}``, from
    CUDA), ``"state_dict"`` or ``"net"``; a ``module.`` prefix
    (DataParallel/DDP) is removed. Loading goes through
    ``torch.load(..., weights_only=True, map_location=device)``: a file that
    carries pickled code is refused, and its code never runs.

    Parameters
    ----------
    model : torch.nn.Module
        The architecture, e.g. ``get_model("resnet32x4")``.
    path : str or Path
    device : str or torch.device, default="cpu"

    Returns
    -------
    teacher : torch.nn.Module
        ``model`` with the weights, on ``device``, in eval mode.

    Raises
    ------
    pickle.UnpicklingError
        If the file carries code (which never runs).
    ValueError
        If the file holds no ``state_dict``, or its keys or shapes do not fit
        ``model`` (the message lists the missing and unexpected keys).

    Examples
    --------
    >>> import tempfile
    >>> from projkd.models import get_model
    >>> path = tempfile.mkdtemp() + "/teacher.pt"
    >>> save_teacher(get_model("resnet8"), path)
    >>> load_teacher(get_model("resnet8"), path).training
    False
    """
    from ..models import load_weights

    load_weights(model, path, map_location=device)
    return model.to(device).eval()
