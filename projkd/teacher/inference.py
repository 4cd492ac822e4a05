"""The frozen teacher run over a whole data set, in large no-grad batches."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..features import FeatureReader
from ..training.batching import TeacherOutputs
from ..training.precision import autocast, autocast_dtype

__all__ = ["compute_teacher_outputs", "output_device", "output_dtype"]


def output_dtype(mixed_precision: str | None) -> torch.dtype:
    """The dtype teacher outputs are kept at: the precision's
    (``torch.bfloat16`` for ``"bf16"``, ``torch.float16`` for ``"fp16"``),
    else float32."""
    return autocast_dtype(mixed_precision) or torch.float32


def output_device(X: Any) -> torch.device:
    """Where teacher outputs for ``X`` are kept: ``X``'s device for a
    tensor (on an accelerator, they never cross to the host), else the CPU."""
    return X.device if isinstance(X, torch.Tensor) else torch.device("cpu")


@torch.no_grad()
def compute_teacher_outputs(
    teacher: nn.Module,
    X: Any,
    *,
    layer: str | None = None,
    device: Any = "cpu",
    batch_size: int = 512,
    mixed_precision: str | None = None,
) -> TeacherOutputs:
    """Run ``teacher`` (already frozen, in eval mode) over ``X`` in batches.

    Parameters
    ----------
    teacher : torch.nn.Module
        The frozen teacher.
    X : ndarray or torch.Tensor
        The samples (a tensor is read detached).
    layer : str or None, default=None
        The teacher's feature layer (see :mod:`projkd.features`).
    device : str or torch.device, default="cpu"
        Where the teacher runs.
    batch_size : int, default=512
        Samples per forward pass.
    mixed_precision : {None, "bf16", "fp16"}, default=None
        Run under autocast and store the outputs at that precision.

    Returns
    -------
    outputs : TeacherOutputs
        Logits and features of every sample, at :func:`output_dtype` on
        :func:`output_device`.
    """
    home = output_device(X)
    X = X.detach() if isinstance(X, torch.Tensor) else torch.from_numpy(np.asarray(X))
    dtype = output_dtype(mixed_precision)
    reader = FeatureReader(teacher, layer, network="teacher")  # resolved once
    logits, features = [], []
    for start in range(0, len(X), batch_size):
        batch = X[start : start + batch_size].to(device)
        with autocast(device, mixed_precision):
            z, f = reader(batch)
        logits.append(z.to(home, dtype))
        features.append(f.to(home, dtype))
    return TeacherOutputs(torch.cat(logits), torch.cat(features))
