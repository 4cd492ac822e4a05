"""The student's output as skorch carries it, and the logits the loss reads.

skorch hands a net's output to its callbacks, scorers and ``predict_proba``
as it came (``y_pred``); :func:`carried` keeps what skorch can carry and
takes the logits of what it cannot. :func:`logits_from` is skorch's
convention for the loss (``log(p)`` after a student that outputs
probabilities), and :func:`clone_output` copies an output out of a CUDA
graph's memory.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..features import logits_of
from .precision import map_tensors

__all__ = ["carried", "clone_output", "logits_from"]


def logits_from(output: Any, *, log_probabilities: bool) -> Tensor:
    """The logits the loss terms read from a student's output.

    With ``log_probabilities`` (skorch's convention for ``NLLLoss``: the
    network outputs probabilities), ``log(p + eps)``, as skorch's
    classifier computes before its ``NLLLoss``; these are valid logits for
    the distillation terms too.
    """
    logits = logits_of(output, network="student")
    if log_probabilities:
        logits = torch.log(logits + torch.finfo(logits.dtype).eps)
    return logits


def carried(output: Any) -> Any:
    """The student's output as skorch carries it to callbacks, scorers and
    ``predict_proba``: a tensor, or a tuple or list of outputs (the first is
    the prediction) as it is; an output skorch cannot carry (an object
    with ``.logits``, a mapping such as a ``ModelOutput``) as its logits."""
    if isinstance(output, Tensor | tuple | list):
        return output
    return logits_of(output, network="student")


def clone_output(output: Any) -> Any:
    """A copy of ``output``'s tensors (of tuples, lists and dicts of them)
    out of a CUDA graph's memory, without autograd history."""
    return map_tensors(_detached_copy, output)


def _detached_copy(tensor: Tensor) -> Tensor:
    return tensor.detach().clone()
