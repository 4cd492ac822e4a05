"""The distillation step inside skorch's step, with skorch's types at its hooks.

skorch's ``train_step_single`` and ``validation_step`` call ``infer(Xi)``
and ``get_loss(y_pred, yi)``; callbacks then receive the batch and
``y_pred``. :class:`DistillationStepMixin` keeps every one of these what
skorch would give: the batch is ``(X, y)``, ``infer`` returns the
student's output (a tensor of logits, or whatever the student returns),
and ``get_loss`` takes that output. What distillation adds travels beside
them:

- *into* the step, the :class:`~projkd.training.batching.PreparedBatch` of
  a batch whose teacher outputs were looked up in the teacher cache or
  computed once for several students, kept beside the batch's input
  tensor (:data:`~projkd.training.batching.PREPARED`);
- *within* the step, the :class:`~projkd.training.batching.DistillationOutput`
  of the forward pass (the student's features, the projections, the
  teacher's outputs), which ``infer`` leaves for ``get_loss`` on the
  :class:`DistillationStep` that ``train_step``/``validation_step`` open;
- *out of* the step, the same output under the step's ``"distillation"``
  key, which skorch hands every callback's ``on_batch_end`` as the keyword
  ``distillation``.

Outside a training or validation step (``predict``, ``forward``,
``predict_proba``), ``infer`` runs the student alone, as skorch's does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from skorch.utils import to_tensor
from torch import Tensor, nn

from ..features import logits_of
from .batching import DistillationOutput, PreparedBatch, prepared_for
from .compiling import unwrap_compiled
from .device import to_channels_last
from .graphs import batch_loss
from .outputs import carried, logits_from
from .precision import autocast, float32

__all__ = ["LOSS_TERMS", "TERM_WEIGHTS", "DistillationStep", "DistillationStepMixin"]


LOSS_TERMS = ("ce", "kd", "feat", "hint")
#: each loss term's weight parameter
TERM_WEIGHTS = {
    "ce": "ce_weight",
    "kd": "kd_weight",
    "feat": "feature_weight",
    "hint": "hint_weight",
}


@dataclass
class DistillationStep:
    """A training or validation step in progress.

    Attributes
    ----------
    training : bool
    output : DistillationOutput or None
        Left by ``infer`` for ``get_loss`` (None until ``infer`` ran).
    returned : object
        What ``infer`` returned (``y_pred``), whose logits ``output`` holds.
    """

    training: bool
    output: DistillationOutput | None = None
    returned: Any = None


class DistillationStepMixin:
    """``infer``, ``get_loss`` and the steps of a distiller (a skorch mixin).

    The host provides the networks (``module_``, ``teacher_``,
    ``projectors_``, ``logit_projector_``, ``hint_projectors_``),
    ``criterion_``, ``logit_loss_``, the parameters, ``_forward_of`` and the
    non-finite guard (:class:`~projkd.training.finite.FiniteStepMixin`).
    """

    # provided by the host estimator
    device: Any
    mixed_precision: str | None
    channels_last: bool
    train_transform: Any
    feature_weight: float
    kd_weight: float
    logit_projector: bool
    temperature: float
    teacher_layer: str | None
    student_layer: str | None
    module_: Any
    teacher_: Any
    projectors_: Any
    logit_projector_: Any
    hint_projectors_: Any
    hint_names: Any
    has_hints: Any
    criterion_: Any
    logit_loss_: Any
    feature_loss_: Any
    hint_layers: Any
    hint_weight: float
    hint_loss: str
    history: Any
    max_epochs: int
    epoch_records_: Any
    guard_nonfinite: Any
    _forward_of: Any

    _step: DistillationStep | None = None

    # ----------------------------------------------------------- the steps
    def _in_step(self, training: bool, run: Any, batch: Any, **params: Any) -> Any:
        """``run(batch, **params)`` (one of skorch's steps) within a step --
        its own, or the one open, which it joins -- and its result with the
        step's output under ``"distillation"``. The step is kept in
        ``__dict__``: a per-batch attribute needs none of skorch's
        ``__setattr__`` bookkeeping."""
        step = self.__dict__.get("_step")
        if step is not None:  # joined: the opener closes it
            result = run(batch, **params)
        else:
            step = self.__dict__["_step"] = DistillationStep(training)
            try:
                result = run(batch, **params)
            finally:
                self.__dict__["_step"] = None
        result["distillation"] = step.output
        return result

    def train_step(self, batch: Any, **fit_params: Any) -> dict[str, Any]:
        """skorch's ``train_step``, with the step's
        :class:`~projkd.training.batching.DistillationOutput` under
        ``"distillation"`` (callbacks receive it in ``on_batch_end``)."""
        return self._in_step(True, super().train_step, batch, **fit_params)  # type: ignore[misc]

    def train_step_single(self, batch: Any, **fit_params: Any) -> dict[str, Any]:
        """skorch's ``train_step_single`` within a training step (joining
        ``train_step``'s, or its own when called directly)."""
        run = super().train_step_single  # type: ignore[misc]
        if self.__dict__.get("_step") is not None:  # train_step reports it
            return run(batch, **fit_params)
        return self._in_step(True, run, batch, **fit_params)

    def validation_step(self, batch: Any, **fit_params: Any) -> dict[str, Any]:
        """skorch's ``validation_step`` (the distillation loss on the
        validation batch), with its ``"distillation"`` output."""
        return self._in_step(False, super().validation_step, batch, **fit_params)  # type: ignore[misc]

    # ------------------------------------------------------------ forward
    def infer(self, x: Any, **fit_params: Any) -> Any:
        """The student's output for the batch ``x``, as skorch's ``infer``
        gives it (float32 under ``mixed_precision``; see :func:`carried`);
        ``fit_params`` go to the student's forward.

        Within a training or validation step, the distillation forward pass:
        the teacher (looked up beside the batch, or run without gradients on
        the same, possibly augmented, view), the student with its features
        and, where a loss term needs them, the projectors and the logit
        projector -- each under autocast; what it computed is left on the
        step for :meth:`get_loss`.
        """
        step = self.__dict__.get("_step")
        if step is None:  # prediction: the student alone
            x = self._as_input(to_tensor(x, device=self.device))
            with autocast(self.device, self.mixed_precision):
                output = self._student_output(x, **fit_params)
            return float32(carried(output))
        prepared = self.prepare_batch(x, training=step.training)
        with autocast(self.device, self.mixed_precision):
            output, features, maps = self._student_forward(
                prepared.inputs, **fit_params
            )
            logits = self.student_logits(output)
            projected = self.projectors_(features) if self.feature_weight else None
            kd_logits = None
            if self.kd_weight:
                kd_logits = (
                    self.logit_projector_(logits) if self.logit_projector else logits
                )
            hint_maps, teacher_maps = (
                self.hint_projectors_(maps, teacher_maps=prepared.teacher_maps)
                if maps
                else ((), ())
            )
        step.output = DistillationOutput(
            logits,
            features,
            projected,
            kd_logits,
            prepared.teacher_logits,
            prepared.teacher_features,
            hint_maps,
            teacher_maps,
        )
        step.returned = float32(carried(output))
        return step.returned

    def prepare_batch(
        self, x: Any, *, training: bool, teacher: bool | None = None
    ) -> PreparedBatch:
        """The batch as the student will see it -- on the device, augmented
        when ``training`` (one view for student and teacher), in its memory
        format -- with the teacher's outputs for it (None when ``teacher`` is
        False; by default, when no loss term needs them).

        A batch prepared before (looked up in the teacher cache, or by
        :func:`~projkd.lockstep.fit_lockstep` for all its estimators) is
        found beside its input tensor and used as it is.
        """
        needed = self.uses_teacher() if teacher is None else teacher
        hints = self.hint_names("teacher")
        prepared = prepared_for(x)
        if prepared is not None and (
            not needed
            or (
                prepared.teacher_logits is not None
                and len(prepared.teacher_maps) == len(hints)
            )
        ):
            inputs, logits, features, maps = prepared
            device = self.device
            if not self.channels_last and self._on_device(prepared):
                return prepared  # already where and as the networks take it
            return PreparedBatch(
                self._as_input(to_tensor(inputs, device=device)),
                None if logits is None else to_tensor(logits, device=device),
                None if features is None else to_tensor(features, device=device),
                tuple(to_tensor(m, device=device) for m in maps),
            )
        x = to_tensor(x, device=self.device)
        if training and self.train_transform is not None:
            x = self.train_transform(x)
        x = self._as_input(x)
        if not needed:
            return PreparedBatch(x, None, None)
        with torch.no_grad(), autocast(self.device, self.mixed_precision):
            output, features, maps = self._forward_of(
                "_teacher_forward_fn", self.teacher_, self.teacher_layer, hints=hints
            )(x)
        return PreparedBatch(x, logits_of(output, network="teacher"), features, maps)

    def _student_forward(
        self, x: Any, **fit_params: Any
    ) -> tuple[Any, Tensor, tuple[Tensor, ...]]:
        """The student's output, features and hint maps from one forward
        pass (data-parallel subclasses route it through DDP's forward)."""
        return self._student_reader()(x, **fit_params)

    def _student_reader(self) -> Any:
        """The student's feature forward (with its hint layers)."""
        # module_ is the estimator's own copy: permanent taps are fine, and
        # taking their values leaves no activation behind
        return self._forward_of(
            "_student_forward_fn",
            self.module_,
            self.student_layer,
            tap=True,
            hints=self.hint_names("student"),
        )

    def _student_output(self, x: Any, **fit_params: Any) -> Any:
        """The student's forward, as skorch's ``infer`` calls it; a network
        whose features or hints a tap catches runs through its reader, which
        takes the taps' values (no activation stays behind)."""
        forward = self._student_reader()
        if forward.reads_forward() or forward.hints:
            return forward(x, **fit_params)[0]
        return self.module_(x, **fit_params)

    def _on_device(self, prepared: PreparedBatch) -> bool:
        """Whether all of ``prepared``'s tensors are on ``device``."""
        if self.device is None:  # skorch's "leave the data where it is"
            return True
        here = torch.device(self.device)
        inputs, logits, features, maps = prepared
        return (
            isinstance(inputs, Tensor)
            and _is_at(inputs, here)
            and (logits is None or _is_at(logits, here))
            and (features is None or _is_at(features, here))
            and (not maps or all(_is_at(m, here) for m in maps))
        )

    def _as_input(self, x: Any) -> Any:
        return to_channels_last(x) if self.channels_last else x

    def student_logits(self, output: Any) -> Tensor:
        """The logits the loss terms read from the student's output.

        As skorch's classifier: with ``criterion=torch.nn.NLLLoss`` the
        student outputs probabilities, and the loss takes their logarithm
        (``log(p + eps)``, valid logits for the distillation terms too).
        """
        return logits_from(output, log_probabilities=self.outputs_probabilities())

    def classification_loss(self) -> Any:
        """The criterion of the cross-entropy term: skorch's one criterion,
        whatever its name (``criterion_`` by default)."""
        # skorch registers a criterion that is a torch module; another
        # callable (a function, a plain object) stays criterion_
        names = getattr(self, "_criteria", None) or ["criterion"]
        return getattr(self, names[0] + "_", None)

    def outputs_probabilities(self) -> bool:
        """Whether the student outputs probabilities: skorch's convention for
        a net whose one criterion is ``NLLLoss`` (remembered per criterion
        object: it is asked at every step)."""
        criterion = self.classification_loss()
        known = self.__dict__.get("_nll_of")
        if known is None or known[0] is not criterion:
            nll = isinstance(unwrap_compiled(criterion), nn.NLLLoss)
            known = self.__dict__["_nll_of"] = (criterion, nll)
        return known[1]

    # --------------------------------------------------------------- loss
    def get_loss(
        self, y_pred: Any, y_true: Any, X: Any = None, training: bool = False
    ) -> Tensor:
        """The weighted distillation loss of the step, computed in float32;
        its terms go to the epoch's device records
        (:mod:`projkd.training.records`).

        ``y_pred`` is the student's output (an override may pass a part of
        it, e.g. the first of several outputs): the cross-entropy and the
        accuracy are computed on its logits, the other terms on what the
        step's forward pass computed. Outside a step, skorch's loss.
        """
        step = self.__dict__.get("_step")
        if step is None or step.output is None:
            return super().get_loss(  # type: ignore[misc]
                y_pred, y_true, X=X, training=training
            )
        out = step.output
        if y_pred is not step.returned:  # an override passed a part of it
            out = out._replace(logits=self.student_logits(y_pred))
        out = out.float()
        loss, values, names = batch_loss(
            out,
            to_tensor(y_true, device=self.device),
            weights=self.loss_weights(),
            temperature=self.temperature,
            ce_loss=self.classification_loss(),
            logit_loss=self.logit_loss_,
            feature_loss=self.feature_loss_,
            hint_loss=self.hint_loss,
            active=self.active_terms(),
        )
        return self.record_loss(loss, values, names, training=training)

    def active_terms(self) -> tuple[str, ...]:
        """The loss terms with a non-zero weight (of ``"ce"``, ``"kd"``,
        ``"feat"``, ``"hint"``; hints only with hint layers): only these are
        computed, by the eager and the compiled step alike (a scheduled
        weight, such as DKD's warm-up, scales a term but never switches it
        off)."""
        return tuple(
            t
            for t in LOSS_TERMS
            if getattr(self, TERM_WEIGHTS[t]) and (t != "hint" or self.has_hints())
        )

    def needs_pairs(self) -> bool:
        """Whether a training batch of one sample would fail (a last batch of
        one is then dropped, :class:`~projkd.training.arrays.ArrayBatchesMixin`):
        ``BatchNorm1d`` in a trained network (``projector="mlp"``), or a logit
        loss with a batch statistic (DIST's intra-class relation)."""
        loss = getattr(getattr(self, "logit_loss_", None), "loss", None)
        pairs = bool(self.kd_weight) and bool(getattr(loss, "needs_pairs", False))
        feature = getattr(self, "feature_loss_", None)
        pairs |= bool(self.feature_weight) and bool(
            getattr(feature, "needs_pairs", False)
        )
        return pairs or super().needs_pairs()  # type: ignore[misc]

    def uses_teacher(self) -> bool:
        """Whether training needs the teacher's outputs (a KD, feature or
        hint term)."""
        hints = self.has_hints() and bool(self.hint_weight)
        return bool(self.kd_weight or self.feature_weight or hints)

    def loss_weights(self) -> dict[str, float]:
        """The loss terms' weights for the current epoch: ``kd_weight`` times
        the logit loss's warm-up (DKD's, from epoch 1 during a fit)."""
        weights = {w: getattr(self, w) for w in TERM_WEIGHTS.values()}
        epoch = len(self.history)
        weights["kd_weight"] *= self.logit_loss_.schedule(epoch, self.max_epochs)
        return weights

    def record_loss(
        self, loss: Tensor, values: Tensor, names: tuple[str, ...], *, training: bool
    ) -> Tensor:
        """The loss to back-propagate, its batch's ``values`` (named
        ``names``) recorded: a training loss goes through the non-finite
        guard, which may return a skipped batch's zero leaf instead."""
        if training:
            guarded = self.guard_nonfinite(loss, values, names)
            if guarded is not loss:
                return guarded  # a skipped batch's zero leaf
        records = self.epoch_records_
        if records.is_open:
            records.add(names, values)
        else:  # a step outside skorch's epoch loop
            prefix = "train" if training else "valid"
            for name, value in zip(names, values.tolist(), strict=True):
                self.history.record_batch(f"{prefix}_{name}", value)
        return loss

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()  # type: ignore[misc,assignment]
        state.pop("_step", None)  # a step in progress never outlives it
        state.pop("_nll_of", None)
        return state


def _is_at(tensor: Tensor, device: torch.device) -> bool:
    """Whether ``tensor`` is on ``device`` (``"cuda"``: the current card, as
    a move to it would take it)."""
    at = tensor.device
    if at == device:
        return True
    return (
        device.type == "cuda"
        and device.index is None
        and at.type == "cuda"
        and at.index == torch.cuda.current_device()
    )
