"""``torch.compile`` for what actually trains: a network's forward *with* its
features.

skorch's ``compile=True`` compiles ``module_``, but distillation never calls
``module_(x)`` during training: it calls ``forward_features`` and
``forward_head`` (or the forward with a feature hook), which on a compiled
module are the *eager* bound methods of the original network -- nothing of
the student would be compiled. :class:`FeatureForward` compiles the function
that training runs, the network read by
:class:`~projkd.features.FeatureReader`, so the graph holds the network's
convolutions as well as the feature pooling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..features import FeatureReader, LayerTap

__all__ = ["FeatureForward", "FeatureTap", "HintTap", "unwrap_compiled"]


def unwrap_compiled(model: nn.Module) -> nn.Module:
    """The original module behind a ``torch.compile`` wrapper (or ``model``)."""
    return getattr(model, "_orig_mod", model)


class FeatureTap(LayerTap):
    """A :class:`~projkd.features.LayerTap` registered once and for good.

    Left on the feature layer of a network that is compiled (or run with
    ``tap=True``), because a hook added and removed inside the compiled
    function breaks the graph (and the network would run eagerly). Its own
    class so that a network pickled with it names
    ``projkd.training.compiling.FeatureTap``, as before.
    """


class HintTap(FeatureTap):
    """A :class:`FeatureTap` on a hint layer (its own, should the layer also
    be the feature layer)."""


def _permanent_tap(
    target: nn.Module, *, use_output: bool, kind: type[FeatureTap] = FeatureTap
) -> FeatureTap:
    """The tap of ``kind`` on ``target``, registered if it has none (a
    network tapped before, or unpickled with its tap, keeps its own)."""
    hooks = target._forward_hooks.values()  # no public listing of hooks
    tap = next((h for h in hooks if type(h) is kind), None)
    if tap is None or tap.use_output != use_output:
        tap = kind(use_output=use_output)
        target.register_forward_hook(tap)
    return tap


class FeatureForward:
    """``(output, features, maps)`` of a network, compiled on first use when asked.

    ``output`` is what the network returned (a tensor of logits, a tuple of
    several outputs, a ``ModelOutput``; :func:`~projkd.features.logits_of`
    reads its logits), ``features`` its penultimate features and ``maps``
    the outputs of its ``hints`` layers, from one forward pass; keyword
    arguments go to the network's forward.

    Not an ``nn.Module`` on purpose: it holds a reference to a network the
    estimator already owns, and skorch would otherwise register it as a
    second copy to train, move and save. The feature source is resolved on
    first use (by a :class:`~projkd.features.FeatureReader`), and the
    function built then is dropped when pickled and rebuilt on first use.
    When compiling a network without ``forward_features``, a
    :class:`FeatureTap` hook is left on its feature layer (a hook added
    inside the compiled call would break the graph), so pass a network that
    is yours to modify.

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
    hints : tuple of str, default=()
        Hint layers whose outputs the forward pass returns too (taps left on
        them for good under the same conditions as the feature tap).

    Attributes
    ----------
    source : torch.nn.Module
        ``model`` as given (before unwrapping).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> output, features, maps = FeatureForward(mlp)(torch.randn(2, 4))
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
        hints: tuple[str, ...] = (),
    ) -> None:
        self.source = model
        self.hints = tuple(hints)
        self.network = network
        self.model = unwrap_compiled(model)
        self.layer = layer
        self.compile_kwargs = compile_kwargs
        self.tap = tap
        self._run: Callable[..., tuple[Any, Tensor, tuple[Tensor, ...]]] | None = None
        self._reads_forward: bool | None = None

    def function(self) -> Callable[..., tuple[Any, Tensor, tuple[Tensor, ...]]]:
        """The function to run (and compile), uncompiled: the reader,
        hook-free where the network has ``forward_features``; with a permanent
        :class:`FeatureTap` when compiled or asked; else with a hook added
        for each call. Built outside any compiled region (a tap registered
        while tracing would break the graph), it can be traced as part of a
        larger function (:mod:`projkd.training.graphs`)."""
        reader = FeatureReader(
            self.model, self.layer, network=self.network, hints=self.hints
        )
        permanent = self.tap or self.compile_kwargs is not None
        tap = None
        if reader.target is not None and permanent:
            tap = _permanent_tap(reader.target, use_output=reader.use_output)
        hint_taps = None
        if permanent:
            hint_taps = [
                _permanent_tap(target, use_output=True, kind=HintTap)
                for target in reader.hint_targets
            ]

        def forward(x: Any, **kwargs: Any) -> tuple[Any, Tensor, tuple[Tensor, ...]]:
            return reader.run(x, tap, hint_taps, **kwargs)

        return forward

    def reads_forward(self) -> bool:
        """Whether the network runs through its ``forward`` (features caught
        by a hook), rather than ``forward_features``/``forward_head``."""
        return (
            FeatureReader(self.model, self.layer, network=self.network).target
            is not None
        )

    def __call__(self, x: Any, **kwargs: Any) -> tuple[Any, Tensor, tuple[Tensor, ...]]:
        if self._run is None:
            function = self.function()
            if self.compile_kwargs is not None:
                function = torch.compile(function, **self.compile_kwargs)
            self._run = function
        return self._run(x, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_run"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.pop("_compiled", None)  # an older FeatureForward's
        state.setdefault("_reads_forward", None)
        self.__dict__.update(state)
        self._run = None
