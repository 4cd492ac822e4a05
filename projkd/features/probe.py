"""Measuring a network's widths: on a sample of the data, or as declared."""

from __future__ import annotations

from typing import Any

import torch
from skorch.dataset import ERROR_MSG_1_ITEM, unpack_data
from skorch.utils import is_dataset
from torch import Tensor, nn
from torch.utils.data import default_collate

from ..errors import InputError
from .reader import (
    FeatureError,
    FeatureReader,
    UnsupportedOutputError,
    forward_with_features,
    has_feature_api,
)

__all__ = [
    "declared_map_widths",
    "declared_widths",
    "feature_width",
    "first_inputs",
    "probe",
    "probe_maps",
]


@torch.no_grad()
def feature_width(
    model: nn.Module, x: Tensor, *, layer: str | None = None, network: str = "network"
) -> tuple[int, int]:
    """Return ``(n_features, n_outputs)`` of ``model`` on the sample batch ``x``.

    The model runs in eval mode (a batch of one is fine for BatchNorm); the
    train/eval flag of every submodule is restored afterwards.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        logits, features = forward_with_features(model, x, layer=layer, network=network)
    finally:
        for module, training in modes:
            module.training = training
    return features.shape[1], logits.shape[-1]


def declared_widths(
    model: nn.Module, layer: str | None = None
) -> tuple[int, int] | None:
    """``(n_features, n_outputs)`` as ``model`` declares them, without data.

    Read from timm's ``num_features``/``num_classes`` attributes when the
    network has ``forward_features``/``forward_head``; otherwise from its
    last :class:`torch.nn.Linear` (the classifier: its ``in_features`` are
    the penultimate features, its ``out_features`` the outputs), or the
    named ``layer`` when it is a ``Linear`` or a convolution.

    Returns
    -------
    widths : tuple of int, or None
        None when the network does not declare them (e.g. a lazy layer,
        another named layer): then only a forward pass on data tells.

    Examples
    --------
    >>> from torch import nn
    >>> declared_widths(nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3)))
    (16, 3)
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    last = linears[-1] if linears else None
    n_outputs = getattr(model, "num_classes", None)
    if not isinstance(n_outputs, int) and last is not None:
        n_outputs = last.out_features
    if layer is not None:
        target = dict(model.named_modules()).get(layer)
        n_features = getattr(target, "out_features", None) or getattr(
            target, "out_channels", None
        )
    elif has_feature_api(model):
        n_features = getattr(model, "num_features", None)
    else:
        n_features = None if last is None else last.in_features
    widths = (n_features, n_outputs)
    if all(isinstance(w, int) and w > 0 for w in widths):
        return widths  # type: ignore[return-value]
    return None


def probe(
    model: nn.Module, sample: Tensor, layer: str | None, role: str
) -> tuple[int, int]:
    """Feature width and outputs of ``model``; a network that cannot take the
    input fails here, before training, with a ``ValueError`` naming the network
    and the input's shape (e.g. a ViT given images of another size)."""
    try:
        return feature_width(model, sample, layer=layer, network=role)
    except (FeatureError, UnsupportedOutputError):
        raise  # projkd's own message (e.g. an unknown layer name)
    except (ValueError, RuntimeError, TypeError, IndexError) as error:
        raise ValueError(
            f"The {role} ({type(model).__name__}) cannot take samples of shape "
            f"{tuple(sample.shape[1:])}: {error}"
        ) from error


@torch.no_grad()
def probe_maps(
    model: nn.Module, sample: Tensor, hints: tuple[str, ...], role: str
) -> tuple[Tensor, ...]:
    """The outputs of ``model``'s hint layers on the sample batch, in eval
    mode (each submodule's mode restored); a hint layer that does not exist
    is refused naming the closest names, one the forward pass never runs
    with a ``FeatureError``."""
    reader = FeatureReader(model, None, network=role, hints=hints)
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        return reader.run(sample)[2]
    finally:
        for module, training in modes:
            module.training = training


def declared_map_widths(model: nn.Module, hints: tuple[str, ...]) -> list[int] | None:
    """The channels of ``model``'s hint layers as they declare them
    (``out_channels`` of a convolution, ``out_features`` of a ``Linear``),
    or None when one does not."""
    modules = dict(model.named_modules())
    widths = [
        getattr(modules.get(name), "out_channels", None)
        or getattr(modules.get(name), "out_features", None)
        for name in hints
    ]
    return widths if all(isinstance(w, int) for w in widths) else None  # type: ignore[return-value]


def first_inputs(X: Any, n: int = 2) -> Tensor:
    """A tiny batch of inputs, on the CPU, for probing the networks.

    A dataset's items must be ``(x, y)`` pairs, as skorch requires (its
    error otherwise, before any training).
    """
    if is_dataset(X):
        items = [X[i] for i in range(min(n, len(X)))]
        if not all(isinstance(item, tuple | list) for item in items):
            raise InputError(ERROR_MSG_1_ITEM)
        sample = default_collate([unpack_data(item)[0] for item in items])
    else:
        sample = X[:n]
    sample = torch.as_tensor(sample)
    return sample.detach().to("cpu", copy=True)
