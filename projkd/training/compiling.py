"""``torch.compile`` for what actually trains: a network's forward *with* its
features.

skorch's ``compile=True`` compiles ``module_``, but distillation never calls
``module_(x)`` during training: it calls ``forward_features`` and
``forward_head`` (or the forward with a feature hook), which on a compiled
module are the *eager* bound methods of the original network -- nothing of
the student would be compiled. :class:`FeatureForward` compiles the function
that training runs, :func:`~projkd.features.forward_with_features` on the
network, so the graph holds the network's convolutions as well as the
feature pooling.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..features import (
    _is_transformers_model,
    _pool,
    forward_with_features,
    layer_activation,
    logits_of,
    resolve_feature_layer,
)

__all__ = ["FeatureForward", "FeatureTap", "unwrap_compiled"]


def unwrap_compiled(model: nn.Module) -> nn.Module:
    """The original module behind a ``torch.compile`` wrapper (or ``model``)."""
    return getattr(model, "_orig_mod", model)


class FeatureTap:
    """A forward hook keeping a layer's input (or output) until taken.

    Registered once and for good on a network that is compiled, because a
    hook added and removed inside the compiled function breaks the graph
    (and the network would run eagerly). Picklable, and it holds no tensor
    once its value has been taken.
    """

    def __init__(self, use_output: bool = False) -> None:
        self.use_output = use_output
        self.value: Tensor | None = None

    def __call__(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self.value = output if self.use_output else args[0]

    def take(self) -> Tensor:
        """The captured tensor (forgotten here)."""
        value, self.value = self.value, None
        if value is None:
            raise ValueError(
                "The feature layer was not called during the forward pass; name "
                "the feature layer explicitly (teacher_layer= or student_layer=)."
            )
        return value


_UNRESOLVED = object()


class FeatureForward:
    """``(logits, features)`` of a network, compiled on first use when asked.

    Not an ``nn.Module`` on purpose: it holds a reference to a network the
    estimator already owns, and skorch would otherwise register it as a
    second copy to train, move and save. The compiled function is dropped
    when pickled and rebuilt on first use. When compiling a network without
    ``forward_features``, a :class:`FeatureTap` hook is left on its feature
    layer (a hook added inside the compiled call would break the graph), so
    pass a network that is yours to modify.

    Parameters
    ----------
    model : torch.nn.Module
        The network (a ``torch.compile`` wrapper is unwrapped).
    layer : str or None, default=None
        As in :func:`~projkd.features.forward_with_features`.
    compile_kwargs : dict or None, default=None
        ``None`` runs eagerly; a dict (possibly empty) is passed to
        :func:`torch.compile` (``mode``, ``backend``, ``dynamic``, ...).
    tap : bool, default=False
        Also when running eagerly, catch the features of a network without
        ``forward_features`` with a permanent :class:`FeatureTap` rather than
        a hook added and removed at every call (less host time per step).
        Only for a network that is yours to modify.
    network : str, default="network"
        What error messages call the network (``"student"``, ``"teacher"``).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> logits, features = FeatureForward(mlp)(torch.randn(2, 4))
    >>> tuple(features.shape)
    (2, 8)
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        compile_kwargs: dict[str, Any] | None = None,
        tap: bool = False,
        network: str = "network",
    ) -> None:
        self.source = model
        self.network = network
        self.model = unwrap_compiled(model)
        self.layer = layer
        self.compile_kwargs = compile_kwargs
        self.tap = tap
        self._compiled: Any = None
        self._target: Any = _UNRESOLVED

    def _eager(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self._target is _UNRESOLVED:  # found once, not at every step
            self._target = resolve_feature_layer(self.model, self.layer)
        if self._target is None:
            features = self.model.forward_features(x)  # type: ignore[operator]
            head = self.model.forward_head(features)  # type: ignore[operator]
            logits = logits_of(head, network=self.network)
            return logits, _pool(features)
        if self.tap:  # a permanent hook: no registration at every step
            if self._compiled is None:
                self._compiled = self._traceable()
            return self._compiled(x)
        return forward_with_features(
            self.model, x, layer=self.layer, network=self.network
        )

    def _traceable(self) -> Any:
        """The function to compile: hook-free where the network has
        ``forward_features``, else its forward with a permanent
        :class:`FeatureTap` on the feature layer."""
        target = self._target = resolve_feature_layer(self.model, self.layer)
        if target is None:
            return self._eager  # resolved first: no guard on it changing
        tap = next(
            (h for h in target._forward_hooks.values() if isinstance(h, FeatureTap)),
            None,
        )
        if tap is None or tap.use_output != (self.layer is not None):
            tap = FeatureTap(use_output=self.layer is not None)
            target.register_forward_hook(tap)
        model, layer, network = self.model, self.layer, self.network
        tokens = _is_transformers_model(model)

        def forward(x: Tensor) -> tuple[Tensor, Tensor]:
            # the same reading of outputs as forward_with_features
            logits = logits_of(model(x), network=network)
            features = layer_activation(tap.take(), layer, network=network)
            return logits, _pool(features, tokens=tokens)

        return forward

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.compile_kwargs is None:
            return self._eager(x)
        if self._compiled is None:
            self._compiled = torch.compile(self._traceable(), **self.compile_kwargs)
        return self._compiled(x)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_compiled"] = None
        del state["_target"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._target = _UNRESOLVED
