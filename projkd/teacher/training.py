"""Training a teacher with skorch."""

from __future__ import annotations

from typing import Any

import torch
from skorch import NeuralNetClassifier
from torch import nn

from .._random import seeded
from ..features import logits_of

__all__ = ["train_teacher"]


def train_teacher(
    model: nn.Module,
    X: Any,
    y: Any,
    *,
    random_state: int | None = None,
    **net_params: Any,
) -> nn.Module:
    """Train a teacher with skorch on class indices and return it in eval mode.

    A thin wrapper over :class:`skorch.NeuralNetClassifier` with a
    cross-entropy criterion: any skorch parameter (``max_epochs``, ``lr``,
    ``optimizer``, ``optimizer__momentum``, ``callbacks``, ``device``, ...)
    can be passed. ``model`` is trained in place.

    Parameters
    ----------
    model : torch.nn.Module
        E.g. ``projkd.models.get_model("resnet32x4")``.
    X : array-like, tensor or Dataset
    y : array-like of int or None
        Class indices 0..C-1 (the teacher's output ``i`` means class ``i``).
    random_state : int or None, default=None
        Seeds torch for the duration of training.
    **net_params
        skorch parameters; ``train_split=None``, ``verbose=0`` and
        ``iterator_train__shuffle=True`` by default.

    Returns
    -------
    teacher : torch.nn.Module
        ``model``, trained, in eval mode.

    Examples
    --------
    >>> from projkd.data import load_digits
    >>> from projkd.models import DigitsCNN
    >>> X, y = load_digits()
    >>> teacher = train_teacher(DigitsCNN(width=4), X, y, max_epochs=1)
    >>> teacher.training
    False
    """
    params: dict[str, Any] = {
        "train_split": None,
        "verbose": 0,
        "iterator_train__shuffle": True,  # skorch does not shuffle by default
        **net_params,
    }
    params.setdefault("criterion", nn.CrossEntropyLoss)
    net = _LogitsNet(model, **params)
    with seeded(random_state, params.get("device", "cpu")):
        net.fit(X, y)
    return net.module_.eval()


class _LogitsNet(NeuralNetClassifier):
    """skorch's classifier on the logits of any output :func:`logits_of` reads
    (a Hugging Face model returns an ``ImageClassifierOutput``)."""

    def infer(self, x: Any, **fit_params: Any) -> torch.Tensor:
        return logits_of(super().infer(x, **fit_params), network="teacher")
