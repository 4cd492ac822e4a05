"""The feature reader: the rules of :mod:`projkd.features` in one place.

:class:`FeatureReader` resolves where a network's penultimate feature comes
from (a named layer, timm's ``forward_features``/``forward_head``, or the
input of the last ``Linear``) and reads it, with the logits and any hint
layers' maps, from one forward pass; :func:`logits_of` takes the logits of
any output type, and :func:`layer_activation` a layer's output as a
tensor. See :mod:`projkd.features` for the rules themselves.
"""

from __future__ import annotations

import difflib
import inspect
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from ..errors import UserError

__all__ = [
    "ACCEPTED_OUTPUTS",
    "FeatureError",
    "FeatureReader",
    "LayerTap",
    "UnsupportedOutputError",
    "forward_with_features",
    "has_feature_api",
    "layer_activation",
    "logits_of",
    "named_module",
    "resolve_feature_layer",
]

ACCEPTED_OUTPUTS = (
    "a tensor of logits, an object with a .logits tensor (a transformers "
    "ModelOutput), a mapping with a 'logits' tensor, or a tuple or list whose "
    "first element is the logits tensor"
)


class UnsupportedOutputError(UserError, TypeError):
    """A network returned something projkd cannot take its logits from."""


class FeatureError(UserError, ValueError):
    """The penultimate features cannot be found (e.g. an unknown layer name)."""


def logits_of(output: Any, *, network: str = "network") -> Tensor:
    """The logits in a network's output, whatever form the output takes.

    Parameters
    ----------
    output : object
        What the network's ``forward`` returned: a tensor of logits; an
        object with a ``logits`` tensor attribute (a ``transformers``
        ``ModelOutput``, a named tuple); a mapping with a ``"logits"``
        tensor; or a tuple or list whose first element is the logits.
    network : str, default="network"
        Which network returned it (``"teacher"``, ``"student"``), for the
        error message.

    Returns
    -------
    logits : torch.Tensor

    Raises
    ------
    UnsupportedOutputError
        A ``TypeError`` naming the network, the type it returned and the
        accepted forms.

    Examples
    --------
    >>> import torch
    >>> z = torch.zeros(2, 3)
    >>> all(logits_of(out) is z for out in (z, {"logits": z}, (z, None), [z]))
    True
    """
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, Mapping):
        logits = output.get("logits")
    if logits is None and isinstance(output, (tuple, list)) and output:
        logits = output[0]
    if isinstance(logits, Tensor):
        return logits
    found = type(output).__name__
    if isinstance(output, Mapping):
        found += f" with keys {list(output)[:8]}"
    elif isinstance(output, (tuple, list)):
        first = type(output[0]).__name__ if output else "nothing"
        found += f" whose first element is {first}"
    raise UnsupportedOutputError(
        f"The {network} returned {found}; projkd cannot find its logits. Accepted: "
        f"{ACCEPTED_OUTPUTS}. Wrap the {network} in a module whose forward returns "
        "the logits."
    )


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
        return named_module(model, layer)
    if has_feature_api(model):
        return None
    last_linear = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last_linear = module
    if last_linear is None:
        raise FeatureError(
            f"Cannot find the penultimate features of {type(model).__name__}: it has "
            "no nn.Linear and no forward_features/forward_head methods. Pass the "
            "name of the feature layer (teacher_layer= or student_layer=)."
        )
    return last_linear


def named_module(model: nn.Module, name: str, *, role: str = "layer") -> nn.Module:
    """The submodule ``name`` of ``model`` (a name of ``named_modules()``).

    Raises
    ------
    FeatureError
        Naming the closest module names when there is no such module.
    """
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = (
        f"the closest names are {', '.join(close)}"
        if close
        else f"its last module names are: {', '.join(names[-8:])}"
    )
    raise FeatureError(
        f"{role} {name!r} is not a module of {type(model).__name__}; {hint}."
    )


class LayerTap:
    """A forward hook keeping a layer's input (or output) until taken.

    :class:`FeatureReader` registers one for the duration of a call (and
    removes it), or is given one registered for good
    (:class:`projkd.training.compiling.FeatureTap`). Picklable, and it holds
    no tensor once its value has been taken.

    Parameters
    ----------
    use_output : bool, default=False
        Keep the layer's output (a named feature layer) rather than its first
        input (the last ``nn.Linear``, whose input is the feature).
    """

    def __init__(self, use_output: bool = False) -> None:
        self.use_output = use_output
        self.value: Any = None

    def __call__(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self.value = output if self.use_output else args[0]

    def take(self, network: str = "network", layer: str | None = None) -> Any:
        """The captured value (forgotten here).

        Parameters
        ----------
        network : str, default="network"
            The network, for the error message.
        layer : str or None, default=None
            A hint layer's name, for the error message (None: the feature
            layer).

        Raises
        ------
        FeatureError
            If the layer was not called since the last ``take``.
        """
        value, self.value = self.value, None
        if value is None:
            fix = (
                "name the feature layer explicitly (teacher_layer= or student_layer=)"
                if layer is None
                else "name a layer its forward pass runs (hint_layers=)"
            )
            what = "feature layer" if layer is None else f"hint layer {layer!r}"
            raise FeatureError(
                f"The {network}'s {what} was not called during its forward pass; {fix}."
            )
        return value


class FeatureReader:
    """Runs a network and returns its logits and penultimate features.

    The one place that knows how features are read. Where they come from is
    resolved once, when the reader is built (see :mod:`projkd.features`):
    ``forward_features``/``forward_head`` (hook-free, so it compiles into one
    graph), else a forward hook on the feature layer -- a :class:`LayerTap`
    added and removed around each call, or a tap left on the layer for good
    and passed to the call (a hook added inside a compiled call would break
    the graph).

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    layer : str or None, default=None
        As in :func:`forward_with_features`.
    network : str, default="network"
        What error messages call the network (``"teacher"``, ``"student"``).

    Attributes
    ----------
    target : torch.nn.Module or None
        The hooked module (a named layer, or the last ``nn.Linear``); ``None``
        when the network's ``forward_features``/``forward_head`` are used.
    use_output : bool
        Whether the hook keeps ``target``'s output (a named layer) or its input.
    pre_logits : bool
        Whether the features are ``forward_head(f, pre_logits=True)``.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> mlp = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    >>> reader = FeatureReader(mlp)
    >>> reader.target is mlp[2]
    True
    >>> logits, features = reader(torch.randn(2, 4))
    >>> tuple(features.shape)
    (2, 16)
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        *,
        network: str = "network",
        hints: tuple[str, ...] = (),
    ) -> None:
        self.model = model
        self.layer = layer
        self.network = network
        self.target = resolve_feature_layer(model, layer)
        self.use_output = layer is not None
        self.pre_logits = self.target is None and _head_takes_pre_logits(model)
        self.tokens = _is_transformers_model(model)
        self.hints = tuple(hints)
        self.hint_targets = [
            named_module(model, name, role=f"The {network}'s hint layer")
            for name in self.hints
        ]

    def __call__(
        self, x: Any, tap: LayerTap | None = None, **kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        """``(logits, features)`` of the batch ``x``.

        Parameters
        ----------
        x : torch.Tensor or mapping
            A batch of inputs (a mapping is passed as keyword arguments).
        tap : LayerTap or None, default=None
            A tap already registered on :attr:`target` for good; ``None``
            registers one for this call only. Unused when :attr:`target` is
            ``None``.
        **kwargs
            Passed to the network's forward (or ``forward_features``).
        """
        output, features, _ = self.run(x, tap, **kwargs)
        return logits_of(output, network=self.network), features

    def run(
        self,
        x: Any,
        tap: LayerTap | None = None,
        hint_taps: Sequence[LayerTap] | None = None,
        **kwargs: Any,
    ) -> tuple[Any, Tensor, tuple[Tensor, ...]]:
        """``(output, features, maps)`` from one forward pass: the network's
        output as it returned it (a tuple of several outputs, a
        ``ModelOutput``), its features, and the outputs of its hint layers
        (``()`` without hints); taking :meth:`__call__`'s arguments, and
        ``hint_taps`` registered on :attr:`hint_targets` for good (None: for
        this call only)."""
        handles = []
        if tap is None and self.target is not None:
            tap = LayerTap(self.use_output)
            handles.append(self.target.register_forward_hook(tap))
        if hint_taps is None and self.hints:
            hint_taps = [LayerTap(use_output=True) for _ in self.hint_targets]
            handles += [
                target.register_forward_hook(hint_tap)
                for target, hint_tap in zip(self.hint_targets, hint_taps, strict=True)
            ]
        try:
            if self.target is None:
                output, features = self._feature_api(x, **kwargs)
            else:
                output = _call(self.model, x, kwargs)
                activation = tap.take(self.network)  # type: ignore[union-attr]
                features = layer_activation(
                    activation, self.layer, network=self.network
                )
                features = _pool(features, tokens=self.tokens)
        finally:
            for handle in handles:
                handle.remove()
        if not self.hints:
            return output, features, ()
        maps = tuple(
            layer_activation(
                hint_tap.take(self.network, name), name, network=self.network
            )
            for name, hint_tap in zip(self.hints, hint_taps, strict=True)  # type: ignore[arg-type]
        )
        return output, features, maps

    def _feature_api(self, x: Any, **kwargs: Any) -> tuple[Any, Tensor]:
        model: Any = self.model
        trunk = _call(model.forward_features, x, kwargs)
        output = model.forward_head(trunk)
        if self.pre_logits:
            # timm's convention: the head pools (tokens or space) before its
            # classifier. Run twice (timm exposes no classifier that is
            # always applied to pre_logits), which costs a pooling and one
            # linear layer; with dropout in the head, training draws two masks.
            return output, model.forward_head(trunk, pre_logits=True)
        if trunk.ndim == 3:
            raise FeatureError(
                f"{type(model).__name__}.forward_features (the {self.network}) "
                f"returned a 3-D tensor of shape {tuple(trunk.shape)} and its "
                "forward_head takes no pre_logits argument, so projkd cannot tell "
                "(N, L, D) tokens from (N, C, L) channels. Name a feature layer "
                "whose output is (N, D) (student_layer= or teacher_layer=), or give "
                "forward_head a pre_logits=True option returning the pooled "
                "features (timm's convention)."
            )
        return output, _pool(trunk)


def _call(function: Any, x: Any, kwargs: dict[str, Any]) -> Any:
    """``function(x, **kwargs)``; a mapping ``x`` is passed as keywords, as
    skorch passes dict input to its module."""
    if isinstance(x, Mapping):
        return function(**x, **kwargs)
    return function(x, **kwargs)


def forward_with_features(
    model: nn.Module, x: Tensor, *, layer: str | None = None, network: str = "network"
) -> tuple[Tensor, Tensor]:
    """Run ``model`` once and return its logits and penultimate features.

    The feature source is resolved at every call; a :class:`FeatureReader`
    resolves it once for many calls.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier whose output holds logits of shape ``(N, n_classes)``, in
        any form :func:`logits_of` accepts.
    x : torch.Tensor
        A batch of inputs (``pixel_values`` for a Hugging Face model).
    layer : str or None, default=None
        Name of the module whose output is the feature; ``None`` finds the
        penultimate features automatically.
    network : str, default="network"
        ``"teacher"`` or ``"student"``, named by error messages.

    Returns
    -------
    logits : torch.Tensor of shape (N, n_classes)
    features : torch.Tensor of shape (N, n_features)

    Raises
    ------
    FeatureError
        If no features can be found: an unknown ``layer``, a feature layer the
        forward pass never called, or a 3-D ``forward_features`` output that
        ``forward_head`` cannot pool (no ``pre_logits`` argument).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> mlp = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    >>> logits, features = forward_with_features(mlp, torch.randn(2, 4))
    >>> tuple(logits.shape), tuple(features.shape)
    ((2, 3), (2, 16))
    """
    return FeatureReader(model, layer, network=network)(x)


def has_feature_api(model: nn.Module) -> bool:
    return callable(getattr(model, "forward_features", None)) and callable(
        getattr(model, "forward_head", None)
    )


def _head_takes_pre_logits(model: nn.Module) -> bool:
    """Whether ``model.forward_head`` names a ``pre_logits`` argument (timm)."""
    head: Any = model.forward_head
    try:
        return "pre_logits" in inspect.signature(head).parameters
    except (TypeError, ValueError):  # no signature to read
        return False


def _is_transformers_model(model: nn.Module) -> bool:
    """Whether ``model`` is a Hugging Face ``transformers`` model (whose 3-D
    activations are token sequences ``(N, L, D)``). Never imports transformers:
    if it is not imported, no model can come from it."""
    transformers = sys.modules.get("transformers")
    base = getattr(transformers, "PreTrainedModel", None)
    return isinstance(base, type) and isinstance(model, base)


def layer_activation(
    output: Any, layer: str | None, *, network: str = "network"
) -> Tensor:
    """A layer's activation: its output, or the first tensor of the tuple, list
    or mapping it returned (``last_hidden_state`` of a ``transformers``
    ``ModelOutput``, whose unset fields are skipped).

    Parameters
    ----------
    output : object
        What the layer returned.
    layer : str or None
        The layer's name, for the error message.
    network : str, default="network"
        The network the layer belongs to, for the error message.

    Returns
    -------
    activation : torch.Tensor

    Raises
    ------
    UnsupportedOutputError
        If the output holds no tensor.
    """
    values: Any = output
    while not isinstance(values, Tensor):
        if isinstance(values, Mapping):
            values = [v for v in values.values() if v is not None]
        if not isinstance(values, (tuple, list)) or not values:
            raise UnsupportedOutputError(
                f"The {network}'s layer {layer!r} returned {type(output).__name__}, "
                "which holds no tensor; name a layer that returns a tensor, a tuple "
                "or a ModelOutput."
            )
        values = values[0]
    return values


def _pool(features: Tensor, *, tokens: bool = False) -> Tensor:
    """Average over everything but the batch and the channel dimension:
    ``(N, C, ...)``, or ``(N, L, D)`` token sequences when ``tokens``."""
    if tokens and features.ndim == 3:
        return features.mean(dim=1)
    if features.ndim > 2:
        return features.flatten(2).mean(dim=2)
    return features
