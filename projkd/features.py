"""Penultimate features of arbitrary networks.

Distillation compares the student's and the teacher's *penultimate* features:
the vector a network's classifier sees. :func:`forward_with_features` returns
it together with the logits from a single forward pass, found in this order:

1. ``layer`` names a submodule: its output, average-pooled over any spatial
   dimensions (``(N, C, H, W) -> (N, C)``).
2. The network has ``forward_features(x)`` and ``forward_head(f)`` (timm's
   convention, followed by :mod:`projkd.models`): ``forward_features`` is the
   feature, ``forward_head`` of it the logits.
3. Otherwise the input of the network's last :class:`torch.nn.Linear`, caught
   by a forward hook that lives only for the duration of the call. This covers
   torchvision's classifiers, the CIFAR zoo and plain MLPs.

The hook is temporary on purpose: a module with a hook attached cannot be
pickled and would carry our state into the user's object.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from skorch.utils import is_dataset
from torch import Tensor, nn
from torch.utils.data import default_collate

__all__ = [
    "feature_width",
    "first_inputs",
    "forward_with_features",
    "probe",
    "resolve_feature_layer",
]


def resolve_feature_layer(
    model: nn.Module, layer: str | None = None
) -> nn.Module | None:
    """Return the submodule whose activations are a network's features.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    layer : str or None, default=None
        A module name as listed by ``model.named_modules()``. ``None`` picks
        automatically (see :mod:`projkd.features`).

    Returns
    -------
    module : torch.nn.Module or None
        The named module, or the last ``nn.Linear`` (whose *input* is the
        feature), or ``None`` when the network exposes
        ``forward_features``/``forward_head`` and no layer was named.

    Raises
    ------
    ValueError
        If ``layer`` is not a module of ``model``, or nothing can be found.
    """
    if layer is not None:
        modules = dict(model.named_modules())
        if layer not in modules:
            names = [name for name in modules if name]
            hint = ", ".join(names[-8:])
            raise ValueError(
                f"layer {layer!r} is not a module of {type(model).__name__}; "
                f"its last module names are: {hint}."
            )
        return modules[layer]
    if _has_feature_api(model):
        return None
    last_linear = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last_linear = module
    if last_linear is None:
        raise ValueError(
            f"Cannot find the penultimate features of {type(model).__name__}: it has "
            "no nn.Linear and no forward_features/forward_head methods. Pass the "
            "name of the feature layer (teacher_layer= or student_layer=)."
        )
    return last_linear


def forward_with_features(
    model: nn.Module, x: Tensor, *, layer: str | None = None
) -> tuple[Tensor, Tensor]:
    """Run ``model`` once and return its logits and penultimate features.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning logits of shape ``(N, n_classes)``.
    x : torch.Tensor
        A batch of inputs.
    layer : str or None, default=None
        Name of the module whose output is the feature; ``None`` finds the
        penultimate features automatically.

    Returns
    -------
    logits : torch.Tensor of shape (N, n_classes)
    features : torch.Tensor of shape (N, n_features)

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> mlp = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    >>> logits, features = forward_with_features(mlp, torch.randn(2, 4))
    >>> tuple(logits.shape), tuple(features.shape)
    ((2, 3), (2, 16))
    """
    target = resolve_feature_layer(model, layer)
    if target is None:
        features = model.forward_features(x)  # type: ignore[operator]
        return model.forward_head(features), _pool(features)  # type: ignore[operator]
    use_output = layer is not None
    with _capture(target, use_output=use_output) as captured:
        logits = model(x)
    if not captured:
        raise ValueError(
            f"The feature layer of {type(model).__name__} was not called during its "
            "forward pass; name the feature layer explicitly (teacher_layer= or "
            "student_layer=)."
        )
    return logits, _pool(captured[-1])


def _has_feature_api(model: nn.Module) -> bool:
    return callable(getattr(model, "forward_features", None)) and callable(
        getattr(model, "forward_head", None)
    )


def _pool(features: Tensor) -> Tensor:
    if features.ndim > 2:
        return features.flatten(2).mean(dim=2)
    return features


@contextmanager
def _capture(module: nn.Module, *, use_output: bool) -> Iterator[list[Tensor]]:
    captured: list[Tensor] = []

    def hook(_module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        captured.append(output if use_output else args[0])

    handle = module.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


@torch.no_grad()
def feature_width(
    model: nn.Module, x: Tensor, *, layer: str | None = None
) -> tuple[int, int]:
    """Return ``(n_features, n_outputs)`` of ``model`` on the sample batch ``x``.

    The model runs in eval mode (a batch of one is fine for BatchNorm); the
    train/eval flag of every submodule is restored afterwards.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        logits, features = forward_with_features(model, x, layer=layer)
    finally:
        for module, training in modes:
            module.training = training
    return features.shape[1], logits.shape[-1]


def probe(
    model: nn.Module, sample: Tensor, layer: str | None, role: str
) -> tuple[int, int]:
    """Feature width and outputs of ``model``; a network that cannot take the
    input fails here, before training, with the input's shape in the message."""
    try:
        return feature_width(model, sample, layer=layer)
    except ValueError:
        raise  # projkd's own message (e.g. an unknown layer name)
    except (RuntimeError, TypeError, IndexError) as error:
        raise ValueError(
            f"The {role} ({type(model).__name__}) cannot take samples of shape "
            f"{tuple(sample.shape[1:])}: {error}"
        ) from error


def first_inputs(X: Any, n: int = 2) -> Tensor:
    """A tiny batch of inputs, on the CPU, for probing the networks."""
    if is_dataset(X):
        items = [X[i] for i in range(min(n, len(X)))]
        sample = default_collate(items)
        sample = sample[0] if isinstance(sample, (tuple, list)) else sample
    else:
        sample = X[:n]
    sample = torch.as_tensor(sample)
    return sample.detach().to("cpu", copy=True)
