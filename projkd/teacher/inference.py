"""The frozen teacher run over a whole data set, in large no-grad batches."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..features import forward_with_features
from ..training.batching import TeacherOutputs
from ..training.precision import autocast, autocast_dtype

__all__ = ["compute_teacher_outputs"]


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
    mixed_precision : {None, "bf16", "fp16"}, default=None
        Run under autocast and store the outputs at that precision.

    Returns
    -------
    outputs : TeacherOutputs
        Logits and features of every sample, float32 (or the
        ``mixed_precision`` dtype) on the CPU, or on ``X``'s device when
        ``X`` is a tensor on an accelerator.
    """
    X = X.detach() if isinstance(X, torch.Tensor) else torch.from_numpy(np.asarray(X))
    dtype = autocast_dtype(mixed_precision) or torch.float32
    home = X.device
    logits, features = [], []
    for start in range(0, len(X), batch_size):
        batch = X[start : start + batch_size].to(device)
        with autocast(device, mixed_precision):
            z, f = forward_with_features(teacher, batch, layer=layer, network="teacher")
        logits.append(z.to(home, dtype))
        features.append(f.to(home, dtype))
    return TeacherOutputs(torch.cat(logits), torch.cat(features))
