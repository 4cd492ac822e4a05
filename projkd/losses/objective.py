"""The distillation objective: its weighted terms, as a plain function.

``L = ce_weight * CE(z_s, y) + kd_weight * L_logit + feature_weight * L_feat``
with ``L_logit`` KD, ``T^2 KL(softmax(z_t / T) || softmax(z_s / T))``, or any
logit loss, and ``L_feat`` PEFD's ``mean(1 - cos(f(s), t))`` (Chen et al.,
arXiv:2310.17183) or any feature loss.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .functional import feature_loss, kd_loss
from .hints import hint_loss as hint_distance

__all__ = ["distillation_loss"]


def distillation_loss(
    logits: Tensor,
    target: Tensor,
    *,
    teacher_logits: Tensor | None,
    projected: Tensor | None,
    teacher_features: Tensor | None,
    kd_logits: Tensor | None = None,
    ce_weight: float | Tensor = 1.0,
    kd_weight: float | Tensor = 0.0,
    feature_weight: float | Tensor = 25.0,
    temperature: float = 4.0,
    ce_loss: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    logit_loss: Callable[[Tensor, Tensor, Tensor], Any] | None = None,
    feature_loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    hint_maps: Sequence[Tensor] = (),
    teacher_maps: Sequence[Tensor] = (),
    hint_weight: float | Tensor = 0.0,
    hint_loss: str = "cosine",
    active: Collection[str] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The full objective and its three terms.

    A term whose weight is 0 is not computed: it is recorded as 0 and what
    only it needs may be None (the teacher's outputs without KD and feature
    terms, the projections without the feature term). A non-finite value in
    a switched-off term's inputs therefore never reaches the loss.

    Parameters
    ----------
    logits : torch.Tensor of shape (N, C)
        The student's logits (the cross-entropy term uses them).
    target : torch.Tensor of shape (N,)
        Class indices.
    teacher_logits : torch.Tensor of shape (N, C) or None
        Needed when ``kd_weight`` is not 0.
    projected : torch.Tensor of shape (N, D) or None
        The mean projection of the student's features; needed when
        ``feature_weight`` is not 0.
    teacher_features : torch.Tensor of shape (N, D) or None
        Needed when ``feature_weight`` is not 0.
    kd_logits : torch.Tensor of shape (N, C) or None, default=None
        Logits for the KD term, e.g. a logit projector's output; ``None``
        uses ``logits``.
    ce_weight, kd_weight, feature_weight : float or torch.Tensor
        Weights of the terms (paper defaults 1, 0, 25); 0-d tensors when
        ``active`` is given.
    temperature : float, default=4.0
    ce_loss : callable, default=torch.nn.functional.cross_entropy
    logit_loss : callable or None, default=None
        The logit term, ``(student_logits, teacher_logits, target) -> (loss,
        parts)`` (e.g. a bound :class:`~projkd.losses.DKDLoss`, see
        :func:`~projkd.losses.resolve_logit_loss`); None is KD at
        ``temperature``.
    feature_loss_fn : callable or None, default=None
        The feature term, ``(projected, teacher_features) -> loss`` (e.g. a
        :class:`~projkd.losses.SRDLoss`, see
        :func:`~projkd.losses.resolve_feature_loss`); None is PEFD's cosine,
        :func:`~projkd.losses.feature_loss`.
    hint_maps, teacher_maps : sequence of torch.Tensor of shape (N, P, C)
        The student's projected hint maps and the teacher's, pair by pair
        (:func:`~projkd.losses.as_positions`); needed for the hint term.
    hint_weight : float or torch.Tensor, default=0.0
        Weight of the hint term: the mean over the pairs of
        :func:`~projkd.losses.hint_loss`.
    hint_loss : {"cosine", "mse"}, default="cosine"
    active : collection of {"ce", "kd", "feat", "hint"} or None, default=None
        The terms to compute; None: those whose weight is not 0. Given, the
        weights are not tested for 0 and may be tensors: a compiled training
        step's weights are inputs of its graph, so that a weight changing
        during a fit (DKD's warm-up) recompiles nothing.

    Returns
    -------
    loss : torch.Tensor, scalar
    terms : dict
        The unweighted terms ``{"ce": ..., "kd": ..., "feat": ...}`` (0 for
        a switched-off term; ``"kd"`` is the logit loss, whichever it is),
        with ``"hint"`` when the hint term is on, followed by the logit
        loss's parts when its term is on.

    Examples
    --------
    >>> import torch
    >>> z, y = torch.zeros(2, 3), torch.tensor([0, 1])
    >>> loss, terms = distillation_loss(z, y, teacher_logits=None, projected=None,
    ...                                 teacher_features=None, feature_weight=0.0)
    >>> float(terms["kd"]), float(terms["feat"])
    (0.0, 0.0)
    """
    if active is None:
        weights = {"ce": ce_weight, "kd": kd_weight, "feat": feature_weight}
        if hint_maps:
            weights["hint"] = hint_weight
        active = [term for term, weight in weights.items() if weight]
    zero = logits.new_zeros((), dtype=torch.float32)  # a switched-off term
    terms = {"ce": zero, "kd": zero, "feat": zero}
    loss: Tensor | None = None
    if "ce" in active:
        terms["ce"] = ce_loss(logits, target)
        loss = ce_weight * terms["ce"]
    if "kd" in active:
        teacher = _needed(teacher_logits, "teacher_logits", "kd_weight")
        student = logits if kd_logits is None else kd_logits
        if logit_loss is None:
            terms["kd"] = kd_loss(student, teacher, temperature=temperature)
        else:
            terms["kd"], parts = _logit_term(logit_loss(student, teacher, target))
            terms.update(parts)
        loss = _plus(loss, kd_weight * terms["kd"])
    if "feat" in active:
        feature_term = feature_loss if feature_loss_fn is None else feature_loss_fn
        terms["feat"] = feature_term(
            _needed(projected, "projected", "feature_weight"),
            _needed(teacher_features, "teacher_features", "feature_weight"),
        )
        loss = _plus(loss, feature_weight * terms["feat"])
    if "hint" in active:
        if not hint_maps or len(hint_maps) != len(teacher_maps):
            raise ValueError(
                "hint_weight is not 0 but the hint maps are missing: got "
                f"{len(hint_maps)} student and {len(teacher_maps)} teacher maps."
            )
        pairs = zip(hint_maps, teacher_maps, strict=True)
        terms["hint"] = sum(
            (hint_distance(s, t, kind=hint_loss) for s, t in pairs),
            start=zero,
        ) / len(hint_maps)
        loss = _plus(loss, hint_weight * terms["hint"])
    if loss is None:
        raise ValueError(
            "ce_weight, kd_weight, feature_weight (and hint_weight) are all 0: "
            "there is nothing to learn from."
        )
    return loss, terms


#: names the history gives the objective's own records
RESERVED = ("ce", "kd", "feat", "hint", "acc", "loss")


def _logit_term(result: Any) -> tuple[Tensor, dict[str, Tensor]]:
    """A logit loss's ``(loss, parts)``, checked."""
    if not (isinstance(result, tuple) and len(result) == 2):
        raise TypeError(
            "A logit loss must return (loss, terms): a scalar tensor and a dict "
            f"of its named parts ({{}} for none), got {type(result).__name__}."
        )
    value, parts = result
    clash = sorted(set(parts) & set(RESERVED))
    if clash:
        raise ValueError(
            f"The logit loss returned terms named {clash}, which the history "
            f"uses for the objective itself ({', '.join(RESERVED)}); rename them."
        )
    return value, parts


def _plus(total: Tensor | None, term: Tensor) -> Tensor:
    return term if total is None else total + term


def _needed(value: Tensor | None, name: str, weight: str) -> Tensor:
    if value is None:
        raise ValueError(f"{name} is needed when {weight} is not 0, got None.")
    return value
