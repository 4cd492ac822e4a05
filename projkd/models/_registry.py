"""A small registry of model factories, by name (timm's ``register_model``)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = ["get_model", "list_models", "register_model"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_TORCHVISION = "torchvision:"


def register_model(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a factory under its function name (a decorator)."""
    if factory.__name__ in _MODELS:
        raise ValueError(f"A model named {factory.__name__!r} is already registered.")
    _MODELS[factory.__name__] = factory
    return factory


def list_models() -> list[str]:
    """Names accepted by :func:`get_model` (torchvision's: ``"torchvision:<name>"``)."""
    return sorted(_MODELS)


def get_model(name: str, num_classes: int | None = None, **kwargs: Any) -> nn.Module:
    """Build a model by name.

    Parameters
    ----------
    name : str
        A name from :func:`list_models`, or ``"torchvision:<name>"`` for any
        model of :func:`torchvision.models.get_model` (e.g.
        ``"torchvision:resnet18"``).
    num_classes : int or None, default=None
        Number of outputs; ``None`` means 100 for the CIFAR zoo and
        torchvision's own default (1000, or that of ``weights``) for
        torchvision models.
    **kwargs
        Passed to the factory (e.g. ``weights=None`` for torchvision).

    Returns
    -------
    model : torch.nn.Module

    Examples
    --------
    >>> model = get_model("torchvision:resnet18", weights=None, num_classes=10)
    >>> model.fc.out_features
    10
    """
    if name.startswith(_TORCHVISION):
        from torchvision import models

        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        return models.get_model(name[len(_TORCHVISION) :], **kwargs)
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"Unknown model {name!r}.{hint} See projkd.models.list_models(), or use "
            "'torchvision:<name>' for torchvision's models."
        )
    return _MODELS[name](
        num_classes=100 if num_classes is None else num_classes, **kwargs
    )
