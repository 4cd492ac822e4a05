"""A small registry of model factories, by name (timm's ``register_model``)."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from os import PathLike
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import InputError
from ._weights import load_weights

__all__ = ["get_model", "list_models", "register_model"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_TORCHVISION = "torchvision:"
_TIMM = "timm:"
_WEIGHT_SUFFIXES = (".pth", ".pt", ".pth.tar", ".ckpt", ".bin")


def register_model(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a factory under its function name (a decorator)."""
    if factory.__name__ in _MODELS:
        raise InputError(f"A model named {factory.__name__!r} is already registered.")
    _MODELS[factory.__name__] = factory
    return factory


_ALIASES = {
    # The reference code's spellings (RepDistiller's models/__init__.py), as in
    # the directory names of its published teachers, e.g. ResNet50_vanilla/.
    "ResNet50": "resnet50",
    "MobileNetV2": "mobilenetv2",
    "mobile_half": "mobilenetv2",
    "ShuffleV1": "shufflenetv1",
    "ShuffleV2": "shufflenetv2",
    "vgg8_bn": "vgg8",
    "vgg11_bn": "vgg11",
    "vgg13_bn": "vgg13",
    "vgg16_bn": "vgg16",
    "vgg19_bn": "vgg19",
}


def list_models() -> list[str]:
    """Names accepted by :func:`get_model`.

    Also accepted: the reference code's spellings (``ResNet50``,
    ``MobileNetV2``, ``ShuffleV1``, ``ShuffleV2``, ...),
    ``"torchvision:<name>"`` and ``"timm:<name>"``.
    """
    return sorted(_MODELS)


def _is_path(weights: Any) -> bool:
    """Whether ``weights`` names a file rather than a torchvision/timm setting."""
    if isinstance(weights, PathLike):
        return True
    if not isinstance(weights, str):
        return False
    return Path(weights).is_file() or weights.endswith(_WEIGHT_SUFFIXES)


def get_model(
    name: str,
    num_classes: int | None = None,
    *,
    weights: Any = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a model by name, optionally with weights from a checkpoint file.

    Parameters
    ----------
    name : str
        A name from :func:`list_models` or its reference spelling
        (``"ResNet50"``, ``"MobileNetV2"``, ``"ShuffleV1"``, ``"ShuffleV2"``);
        ``"torchvision:<name>"`` for any model of
        :func:`torchvision.models.get_model` (e.g. ``"torchvision:resnet18"``);
        ``"timm:<name>"`` for any model of :func:`timm.create_model` (the
        ``timm`` extra; see :class:`~projkd.models.TimmModel`).
    num_classes : int or None, default=None
        Number of outputs; ``None`` means the factory's default: 100 for the
        CIFAR zoo, 10 for the digits networks, the library's own for
        torchvision and timm models.
    weights : str, path, torchvision weights or None, default=None
        A checkpoint file: a plain ``state_dict``, a training checkpoint with
        the weights under ``"model"`` (RepDistiller's
        ``<arch>_vanilla/ckpt_epoch_240.pth``), ``"state_dict"`` or ``"net"``,
        with or without a ``module.`` prefix; loaded with ``strict=True``
        through ``torch.load(..., weights_only=True)`` (see
        :func:`~projkd.models.read_state_dict`). For torchvision models, a
        weights enum or its string name keeps torchvision's meaning.
    **kwargs
        Passed to the factory (e.g. ``width_mult=1.0``, or
        ``pretrained=True`` for timm).

    Returns
    -------
    model : torch.nn.Module

    Examples
    --------
    >>> model = get_model("torchvision:resnet18", weights=None, num_classes=10)
    >>> model.fc.out_features
    10
    >>> get_model("ShuffleV2").num_features
    1024
    """
    arguments = dict(kwargs)
    spec: dict[str, Any] = {"name": name, "num_classes": num_classes}
    spec["kwargs"] = arguments
    if name.startswith(_TORCHVISION):
        model = _torchvision(name[len(_TORCHVISION) :], num_classes, weights, kwargs)
        return _record(model, spec)
    if name.startswith(_TIMM):
        from ._timm import timm_model

        arguments.pop("pretrained", None)  # the weights travel in the file
        model = timm_model(name[len(_TIMM) :], num_classes, weights=weights, **kwargs)
        return _record(model, spec)
    key = _ALIASES.get(name, name)
    if key not in _MODELS:
        close = difflib.get_close_matches(name, [*_MODELS, *_ALIASES], n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise InputError(
            f"Unknown model {name!r}.{hint} See projkd.models.list_models(), or use "
            "'torchvision:<name>' or 'timm:<name>'."
        )
    factory = _MODELS[key]
    n_classes = _default_classes(factory) if num_classes is None else num_classes
    model = factory(num_classes=n_classes, **kwargs)
    if weights is not None:
        if not _is_path(weights):
            raise InputError(
                f"weights for {name!r} must be the path of a checkpoint file; got "
                f"{weights!r}."
            )
        load_weights(model, weights, arch=_describe(key, n_classes))
    return _record(model, {**spec, "name": key, "num_classes": n_classes})


#: Attribute under which get_model records how a model was built, so that an
#: exported student can name its architecture (projkd.export).
SPEC_ATTRIBUTE = "_projkd_spec"


def _record(model: nn.Module, spec: dict[str, Any]) -> nn.Module:
    object.__setattr__(model, SPEC_ATTRIBUTE, spec)
    return model


def _default_classes(factory: Callable[..., nn.Module]) -> int:
    """The factory's own default (100 for the CIFAR zoo, 10 for digits)."""
    parameter = inspect.signature(factory).parameters.get("num_classes")
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return 100
    return int(parameter.default)


def _describe(name: str, num_classes: int) -> str:
    return f"{name} (num_classes={num_classes})"


def _torchvision(
    name: str, num_classes: int | None, weights: Any, kwargs: dict[str, Any]
) -> nn.Module:
    from torchvision import models

    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if weights is None or not _is_path(weights):
        return models.get_model(name, weights=weights, **kwargs)
    model = models.get_model(name, weights=None, **kwargs)
    return load_weights(model, weights, arch=f"torchvision:{name}")
