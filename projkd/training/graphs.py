"""The training step as one compiled graph, inside skorch's step.

With ``compile=True`` skorch compiles each module on its own, and the step
that trains them is a chain of separately launched pieces: the student's
forward, the projectors, the logit projector, the loss terms and the batch
statistics. Here the forward of the whole step -- the student's forward with
its features, the projectors, the (logit projector and) loss, and the
statistics the epoch records -- is one function, :class:`TrainingGraph`,
compiled once by :func:`torch.compile` with the ``compile__*`` parameters;
its backward is the one AOT autograd derives with it, and under
``compile__mode="reduce-overhead"`` both are replayed as CUDA graphs. The
rest of skorch's step stays on the host, between the pieces:
:class:`GraphStepMixin` replaces ``train_step_single`` alone (the forward
and the ``backward()`` call), and skorch's ``train_step`` then notifies
``on_grad_computed`` (gradient clipping and other callbacks) and runs the
optimizer's step, fused by default
(:class:`~projkd.training.finite.FusedOptimizerMixin`). The optimizer's
step is not compiled: the learning rate skorch's
:class:`~skorch.callbacks.LRScheduler` writes into its parameter groups as a
float then recompiles nothing. The frozen teacher is not part of the graph
(it runs under ``no_grad`` before it, compiled on its own when not cached).

What makes the graph hold through a fit, and why:

- *Weights that change are inputs*: the loss weights (``kd_weight`` times
  the logit loss's warm-up, e.g. DKD's, which changes every epoch) enter as
  one tensor; a float would be a constant of the graph and recompile it.
- *Two static shapes*: ``dynamic=False`` unless ``compile__dynamic`` is
  given, so the full batches and the smaller last batch get one static
  graph each, both built in the first epoch (padding the last batch would
  corrupt BatchNorm's statistics; dropping it would depart from the
  recipe).
- *Outputs copied out of the graph's memory*: a CUDA graph's outputs are
  overwritten by its next replay, so the batch's statistics (kept on the
  device until the epoch ends, :mod:`projkd.training.records`) and the
  logits and features handed to callbacks are cloned as they come out.
- *No host read*: the non-finite check
  (:mod:`projkd.training.finite`) is computed right after the graph, on
  the device.
- *No data-dependent shapes* in the loss functions (DKD gathers its
  non-target logits instead of masking them).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
from skorch.dataset import unpack_data
from skorch.utils import to_tensor
from torch import Tensor, nn

from ..losses import distillation_loss
from ..projectors import HintProjectors
from .batching import DistillationOutput
from .compiling import FeatureForward, unwrap_compiled
from .outputs import carried, clone_output, logits_from
from .precision import autocast, float32

__all__ = [
    "GraphStepMixin",
    "TrainingGraph",
    "batch_loss",
    "graph_compile_kwargs",
    "own_code",
]

#: the weight parameter of each loss term, in the order of the weights tensor
WEIGHTS = ("ce_weight", "kd_weight", "feature_weight", "hint_weight")


def graph_compile_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """:func:`torch.compile`'s arguments for the training graph: the
    ``compile__*`` parameters, with ``dynamic=False`` unless they set it
    (one static graph for the full batches, one for the last).

    Examples
    --------
    >>> graph_compile_kwargs({"mode": "reduce-overhead"})
    {'dynamic': False, 'mode': 'reduce-overhead'}
    """
    return {"dynamic": False, **kwargs}


def batch_loss(
    out: DistillationOutput,
    y: Tensor,
    *,
    weights: dict[str, Any],
    temperature: float,
    ce_loss: Callable[[Tensor, Tensor], Tensor],
    logit_loss: Any,
    feature_loss: Callable[[Tensor, Tensor], Tensor] | None = None,
    hint_loss: str = "cosine",
    active: tuple[str, ...] | None = None,
) -> tuple[Tensor, Tensor, tuple[str, ...]]:
    """A batch's weighted loss and the values its epoch records.

    The one computation of the eager step (the distiller's ``get_loss``) and
    of the compiled one (:class:`TrainingGraph`).

    Parameters
    ----------
    out : DistillationOutput
        The forward pass, in float32.
    y : torch.Tensor of shape (N,)
        Class indices.
    weights : dict
        ``ce_weight``, ``kd_weight``, ``feature_weight``, ``hint_weight``:
        floats, or 0-d tensors when ``active`` is given.
    temperature : float
    ce_loss, logit_loss : callable
        As in :func:`~projkd.losses.distillation_loss`.
    feature_loss : callable or None, default=None
        The feature term (:func:`~projkd.losses.resolve_feature_loss`); None
        is PEFD's cosine.
    hint_loss : {"cosine", "mse"}, default="cosine"
    active : tuple of str or None, default=None
        The terms to compute (None: those with a non-zero weight).

    Returns
    -------
    loss : torch.Tensor, scalar
    values : torch.Tensor of shape (len(names),)
        The unweighted terms, the accuracy and the loss, without a graph.
    names : tuple of str
        ``"ce", "kd", "feat"`` (``"hint"``), the logit loss's parts,
        ``"acc", "loss"``.
    """
    loss, terms = distillation_loss(
        out.logits,
        y,
        teacher_logits=out.teacher_logits,
        projected=out.projected,
        teacher_features=out.teacher_features,
        kd_logits=out.kd_logits,
        hint_maps=out.hint_maps,
        teacher_maps=out.teacher_maps,
        temperature=temperature,
        **weights,
        ce_loss=ce_loss,
        logit_loss=logit_loss,
        feature_loss_fn=feature_loss,
        hint_loss=hint_loss,
        active=active,
    )
    with torch.no_grad():  # statistics: no graph, no detach
        accuracy = (out.logits.argmax(dim=1) == y).float().mean()
        values = torch.stack([*terms.values(), accuracy, loss])
    return loss, values, (*terms, "acc", "loss")  # the logit loss's parts after "feat"


def _architecture(module: nn.Module) -> str:
    """A module's layers and the shapes of its tensors (a module that holds
    its weights as parameters, such as a fused projector ensemble, has an
    uninformative ``repr``)."""
    tensors = [*module.named_parameters(), *module.named_buffers()]
    return repr(module) + repr([(n, tuple(t.shape), t.dtype) for n, t in tensors])


#: one code object per traced structure (see :func:`own_code`)
_CODES: dict[str, types.CodeType] = {}


def own_code(function: Callable[..., Any], key: str) -> Callable[..., Any]:
    """``function`` (a closure) running the code object kept for ``key``.

    :func:`torch.compile` caches its graphs on the function's code object,
    up to its recompile limit (8) per code object and process; the training
    steps of every estimator share one code, so a process training more than
    four structures (each with its full and last batch) would train the rest
    eagerly. A code object of its own per structure gives each its own
    cache, and estimators of one structure (a search's fits) still share
    their graphs.

    Examples
    --------
    >>> def make(k):
    ...     return lambda x: x + k
    >>> one, two = own_code(make(1), "a"), own_code(make(2), "b")
    >>> one(1), two(1), one.__code__ is two.__code__
    (2, 3, False)
    """
    code = _CODES.setdefault(key, function.__code__.replace())
    return types.FunctionType(
        code,
        function.__globals__,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )


class TrainingGraph:
    """The forward of a distillation training step, compiled as one function.

    ``graph(x, y, teacher_logits, teacher_features, weights, teacher_maps)``
    returns ``(loss, values, output, logits, features, names)``: the loss to
    back-propagate (through the backward compiled with it), the batch's
    records (:func:`batch_loss`), the student's output, logits and features
    -- each but the loss copied out of the graph's memory and without
    autograd history -- and the records' names. Compiled on first call with
    :func:`graph_compile_kwargs`; the compiled function is dropped when
    pickled and rebuilt on first use, as :class:`FeatureForward`'s.

    Parameters
    ----------
    student : torch.nn.Module
        The network to train (a ``torch.compile`` wrapper is unwrapped); a
        network without ``forward_features`` gets a permanent
        :class:`~projkd.training.compiling.FeatureTap`.
    layer : str or None
        As in :func:`~projkd.features.forward_with_features`.
    projectors, logit_projector, ce_loss : torch.nn.Module
        Run inside the graph (compiled wrappers unwrapped).
    logit_loss : callable
        The bound logit loss (:func:`~projkd.losses.resolve_logit_loss`).
    log_probabilities : bool
        The student outputs probabilities (``NLLLoss``; see
        :func:`logits_from`).
    temperature : float
    active : tuple of str
        The loss terms with a non-zero weight: which pieces the graph holds.
    device : str, torch.device or None
    mixed_precision : {None, "bf16", "fp16"}
        Autocast of the networks; the loss is computed in float32.
    compile_kwargs : dict
        The ``compile__*`` parameters.
    hints : tuple of str, default=()
        The student's hint layers (tapped for good, as the feature layer).
    hint_projectors : torch.nn.ModuleList or None, default=None
        One projector ensemble per hint pair, run inside the graph.
    hint_loss : {"cosine", "mse"}, default="cosine"
    feature_loss : callable or None, default=None
        The feature term (None: PEFD's cosine).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from projkd.losses import resolve_logit_loss
    >>> student = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> graph = TrainingGraph(
    ...     student, None, projectors=nn.Identity(), logit_projector=nn.Identity(),
    ...     ce_loss=nn.CrossEntropyLoss(), temperature=4.0, active=("ce",),
    ...     logit_loss=resolve_logit_loss("kd", kd_weight=0.0, temperature=4.0),
    ...     log_probabilities=False,
    ...     device="cpu", mixed_precision=None,
    ...     compile_kwargs={"backend": "eager"})
    >>> out = graph(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]), None, None,
    ...             graph.weights((1.0, 0.0, 0.0, 0.0), "cpu"))
    >>> out[-1]
    ('ce', 'kd', 'feat', 'acc', 'loss')
    """

    def __init__(
        self,
        student: nn.Module,
        layer: str | None,
        *,
        projectors: nn.Module,
        logit_projector: nn.Module,
        ce_loss: Any,
        logit_loss: Any,
        log_probabilities: bool,
        temperature: float,
        active: tuple[str, ...],
        device: Any,
        mixed_precision: str | None,
        compile_kwargs: dict[str, Any],
        hints: tuple[str, ...] = (),
        hint_projectors: nn.Module | None = None,
        hint_loss: str = "cosine",
        feature_loss: Any = None,
    ) -> None:
        self.parts: dict[str, Any] = dict(
            feature_loss=feature_loss,
            hints=hints,
            hint_projectors=HintProjectors()
            if hint_projectors is None
            else hint_projectors,
            hint_loss=hint_loss,
            student=student,
            layer=layer,
            projectors=projectors,
            logit_projector=logit_projector,
            ce_loss=ce_loss,
            logit_loss=logit_loss,
            log_probabilities=log_probabilities,
            temperature=temperature,
            active=active,
            device=device,
            mixed_precision=mixed_precision,
            compile_kwargs=compile_kwargs,
        )
        self._run: Callable[..., Any] | None = None
        self._weights: tuple[tuple[float, ...], Tensor] | None = None

    def built_from(self, parts: dict[str, Any]) -> bool:
        """Whether this graph runs these parts: the same modules (identity)
        and equal settings."""
        if parts.keys() != self.parts.keys():
            return False
        for name, value in parts.items():
            mine = self.parts[name]
            if mine is value:
                continue
            if isinstance(value, nn.Module) or isinstance(mine, nn.Module):
                return False
            if mine != value:
                return False
        return True

    def weights(self, values: tuple[float, ...], device: Any) -> Tensor:
        """The loss weights as the graph's input, a float32 tensor on
        ``device``, made anew only when they change (once an epoch at most:
        no host-to-device copy per step)."""
        if self._weights is None or self._weights[0] != values:
            self._weights = (values, torch.tensor(values, device=device))
        return self._weights[1]

    def function(self) -> Callable[..., Any]:
        """The step's forward, uncompiled."""
        parts = self.parts
        student = FeatureForward(
            parts["student"],
            parts["layer"],
            None,
            tap=True,
            network="student",
            hints=parts["hints"],
        ).function()  # built here: a tap registered while tracing breaks a graph
        hint_projectors = unwrap_compiled(parts["hint_projectors"])
        hint_loss, feature_loss = parts["hint_loss"], parts["feature_loss"]
        projectors = unwrap_compiled(parts["projectors"])
        logit_projector = unwrap_compiled(parts["logit_projector"])
        ce_loss = unwrap_compiled(parts["ce_loss"])
        logit_loss, temperature = parts["logit_loss"], parts["temperature"]
        log_probabilities = parts["log_probabilities"]
        active, device = parts["active"], parts["device"]
        mixed_precision = parts["mixed_precision"]

        def step(
            x: Tensor,
            y: Tensor,
            teacher_logits: Tensor | None,
            teacher_features: Tensor | None,
            weights: Tensor,
            teacher_maps: tuple[Tensor, ...] = (),
        ) -> tuple[Tensor, Tensor, Any, Tensor, Tensor, tuple[str, ...]]:
            with autocast(device, mixed_precision):
                output, features, maps = student(x)
                logits = logits_from(output, log_probabilities=log_probabilities)
                projected = projectors(features) if "feat" in active else None
                kd_logits = logit_projector(logits) if "kd" in active else None
                hint_maps, positions = hint_projectors(maps, teacher_maps=teacher_maps)
            out = DistillationOutput(
                logits,
                features,
                projected,
                kd_logits,
                teacher_logits,
                teacher_features,
                hint_maps,
                positions,
            ).float()
            loss, values, names = batch_loss(
                out,
                y,
                weights=dict(zip(WEIGHTS, weights.unbind(), strict=True)),
                temperature=temperature,
                ce_loss=ce_loss,
                logit_loss=logit_loss,
                feature_loss=feature_loss,
                hint_loss=hint_loss,
                active=active,
            )
            return loss, values, output, out.logits, features, names

        return own_code(step, self.structure())

    def structure(self) -> str:
        """What the graph's code is traced for: the networks' architectures,
        the terms, the settings and the logit loss with its options (not the
        weights, which are inputs)."""
        parts = self.parts
        modules = (
            "student",
            "projectors",
            "logit_projector",
            "ce_loss",
            "hint_projectors",
        )
        shapes = [_architecture(unwrap_compiled(parts[name])) for name in modules]
        settings = [
            parts[k]
            for k in (
                "layer",
                "active",
                "mixed_precision",
                "log_probabilities",
                "hints",
                "hint_loss",
            )
        ]
        # the loss's options and the temperature are constants of the graph:
        # each value its own code object, never torch's recompile limit
        loss = (
            repr(parts["logit_loss"]),
            parts["temperature"],
            repr(parts["feature_loss"]),
        )
        return repr((shapes, settings, loss))

    def __call__(
        self,
        x: Tensor,
        y: Tensor,
        teacher_logits: Tensor | None,
        teacher_features: Tensor | None,
        weights: Tensor,
        teacher_maps: tuple[Tensor, ...] = (),
    ) -> tuple[Tensor, Tensor, Any, Tensor, Tensor, tuple[str, ...]]:
        if self._run is None:
            kwargs = graph_compile_kwargs(self.parts["compile_kwargs"])
            self._run = torch.compile(self.function(), **kwargs)
        loss, values, output, logits, features, names = self._run(
            x, y, teacher_logits, teacher_features, weights, teacher_maps
        )
        # a CUDA graph's outputs are overwritten by its next replay
        values, logits, features = (
            t.detach().clone() for t in (values, logits, features)
        )
        return loss, values, clone_output(output), logits, features, names

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_run"] = state["_weights"] = None
        return state


class GraphStepMixin:
    """skorch's training step with its forward as one compiled graph (a
    mixin of :class:`~projkd.ProjectorDistiller`, before the mixins whose
    ``train_step_single`` it replaces).

    Where the host's ``uses_graph_step()`` says so (``compile=True``), the
    training step runs :class:`TrainingGraph`; otherwise, and for
    validation and prediction, the host's own steps run (validation with
    the student's forward compiled on its own). The host
    provides ``prepare_batch``, ``record_loss`` (the non-finite guard and
    the records), ``loss_weights``, ``active_terms`` and its networks.
    """

    _GRAPH = "_training_graph_fn"

    # provided by the host estimator
    module_: Any
    projectors_: Any
    logit_projector_: Any
    criterion_: Any
    logit_loss_: Any
    grad_scaler_: Any
    device: Any
    mixed_precision: str | None
    temperature: float
    student_layer: str | None
    get_params_for: Any
    record_loss: Any
    loss_weights: Any
    active_terms: Any
    uses_graph_step: Any
    prepare_batch: Any
    hint_names: Any
    hint_projectors_: Any
    hint_loss: str
    feature_loss_: Any
    classification_loss: Any
    outputs_probabilities: Any
    _set_training: Any

    def torch_compile(self, module: Any, name: str) -> Any:
        """skorch's compile of each module, but for the training graph's
        pieces: the projectors, the logit projector and the criterion run
        inside the graph (and eagerly in validation); ``module_``'s compiled
        wrapper serves prediction (the graph unwraps it)."""
        if name != "module" and self.uses_graph_step():
            return module
        return super().torch_compile(module, name)  # type: ignore[misc]

    def training_graph(self) -> TrainingGraph:
        """The :class:`TrainingGraph` of the current networks and settings,
        built anew when one of them changed."""
        parts = dict(
            student=self.module_,
            layer=self.student_layer,
            projectors=self.projectors_,
            logit_projector=self.logit_projector_,
            ce_loss=self.criterion_,
            logit_loss=self.logit_loss_,
            log_probabilities=isinstance(unwrap_compiled(self.criterion_), nn.NLLLoss),
            temperature=self.temperature,
            active=self.active_terms(),
            device=self.device,
            mixed_precision=self.mixed_precision,
            compile_kwargs=self.get_params_for("compile"),
            hints=self.hint_names("student"),
            hint_projectors=self.hint_projectors_,
            hint_loss=self.hint_loss,
            feature_loss=self.feature_loss_,
        )
        graph = self.__dict__.get(self._GRAPH)
        if graph is None or not graph.built_from(parts):
            graph = self.__dict__[self._GRAPH] = TrainingGraph(**parts)
        return graph

    def train_step_single(self, batch: Any, **fit_params: Any) -> dict[str, Any]:
        """skorch's ``train_step_single`` -- forward, loss, ``backward()`` --
        with the forward and the loss as one compiled graph.

        Overridden (for ``compile=True`` alone) because skorch's calls
        ``infer`` and ``get_loss`` as separate eager pieces; the
        ``backward()`` call stays here and ``on_grad_computed`` and the
        optimizer's step in skorch's ``train_step``, on the host between the
        pieces. ``y_pred`` is the student's output (without autograd
        history), and the step's
        :class:`~projkd.training.batching.DistillationOutput` holds its
        logits, features and the teacher's outputs. Arguments to the
        student's forward (``fit_params``) are constants of the graph: with
        any, the step runs eagerly.
        """
        step = self.__dict__.get("_step")
        if not self.uses_graph_step() or step is None or fit_params:
            return super().train_step_single(batch, **fit_params)  # type: ignore[misc]
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        prepared = self.prepare_batch(Xi, training=True)
        y = to_tensor(yi, device=self.device)
        graph = self.training_graph()
        weights = self.loss_weights()
        loss, values, output, logits, features, names = graph(
            prepared.inputs,
            y,
            prepared.teacher_logits,
            prepared.teacher_features,
            graph.weights(
                tuple(float(weights[w]) for w in WEIGHTS), prepared.inputs.device
            ),
            prepared.teacher_maps,
        )
        loss = self.record_loss(loss, values, names, training=True)
        scaler = getattr(self, "grad_scaler_", None)
        (loss if scaler is None else scaler.scale(loss)).backward()
        step.output = DistillationOutput(
            logits,
            features,
            None,
            None,
            prepared.teacher_logits,
            prepared.teacher_features,
            (),
            prepared.teacher_maps,
        )
        return {"loss": loss, "y_pred": float32(carried(output))}
