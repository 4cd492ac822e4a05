"""The distillation objective as plain functions on tensors.

``L = ce_weight * CE(z_s, y) + kd_weight * L_kd + feature_weight * L_feat``
with ``L_kd = T^2 KL(softmax(z_t / T) || softmax(z_s / T))`` and
``L_feat = mean(1 - cos(f(s), t))`` (Chen et al., arXiv:2310.17183).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ._validation import InputError

__all__ = ["distillation_loss", "feature_loss", "kd_loss"]


def feature_loss(projected: Tensor, teacher_features: Tensor) -> Tensor:
    """Batch mean of ``1 - cos(projected, teacher_features)``.

    Parameters
    ----------
    projected : torch.Tensor of shape (N, D)
        The (mean) projection of the student's features.
    teacher_features : torch.Tensor of shape (N, D)
        The teacher's features.

    Returns
    -------
    loss : torch.Tensor, scalar
        0 when every pair points the same way, 1 when orthogonal, 2 when
        opposite.

    Examples
    --------
    >>> import torch
    >>> float(feature_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]])))
    1.0
    """
    if projected.shape != teacher_features.shape:
        raise InputError(
            f"The projected student features have shape {tuple(projected.shape)} "
            f"but the teacher's features {tuple(teacher_features.shape)}."
        )
    return (1.0 - F.cosine_similarity(projected, teacher_features, dim=1)).mean()


def kd_loss(
    student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 4.0
) -> Tensor:
    """Hinton's knowledge-distillation loss.

    ``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over
    the batch. The ``T^2`` keeps gradient magnitudes independent of ``T``.

    Parameters
    ----------
    student_logits, teacher_logits : torch.Tensor of shape (N, C)
    temperature : float, default=4.0

    Returns
    -------
    loss : torch.Tensor, scalar

    References
    ----------
    Hinton, Vinyals, Dean. "Distilling the Knowledge in a Neural Network",
    arXiv:1503.02531.
    """
    if student_logits.shape != teacher_logits.shape:
        raise InputError(
            f"The student's logits have shape {tuple(student_logits.shape)} but the "
            f"teacher's {tuple(teacher_logits.shape)}; both must predict the same "
            "classes."
        )
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def distillation_loss(
    logits: Tensor,
    target: Tensor,
    *,
    teacher_logits: Tensor | None,
    projected: Tensor | None,
    teacher_features: Tensor | None,
    kd_logits: Tensor | None = None,
    ce_weight: float = 1.0,
    kd_weight: float = 0.0,
    feature_weight: float = 25.0,
    temperature: float = 4.0,
    ce_loss: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
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
    ce_weight, kd_weight, feature_weight : float
        Weights of the terms (paper defaults 1, 0, 25).
    temperature : float, default=4.0
    ce_loss : callable, default=torch.nn.functional.cross_entropy

    Returns
    -------
    loss : torch.Tensor, scalar
    terms : dict
        The unweighted terms ``{"ce": ..., "kd": ..., "feat": ...}``; 0 for
        a switched-off term.

    Examples
    --------
    >>> import torch
    >>> z, y = torch.zeros(2, 3), torch.tensor([0, 1])
    >>> loss, terms = distillation_loss(z, y, teacher_logits=None, projected=None,
    ...                                 teacher_features=None, feature_weight=0.0)
    >>> float(terms["kd"]), float(terms["feat"])
    (0.0, 0.0)
    """
    zero = logits.new_zeros((), dtype=torch.float32)  # a switched-off term
    terms = {"ce": zero, "kd": zero, "feat": zero}
    loss: Tensor | None = None
    if ce_weight:
        terms["ce"] = ce_loss(logits, target)
        loss = ce_weight * terms["ce"]
    if kd_weight:
        teacher = _needed(teacher_logits, "teacher_logits", "kd_weight")
        student = logits if kd_logits is None else kd_logits
        terms["kd"] = kd_loss(student, teacher, temperature=temperature)
        loss = _plus(loss, kd_weight * terms["kd"])
    if feature_weight:
        terms["feat"] = feature_loss(
            _needed(projected, "projected", "feature_weight"),
            _needed(teacher_features, "teacher_features", "feature_weight"),
        )
        loss = _plus(loss, feature_weight * terms["feat"])
    if loss is None:
        raise InputError(
            "ce_weight, kd_weight and feature_weight are all 0: there is nothing "
            "to learn from."
        )
    return loss, terms


def _plus(total: Tensor | None, term: Tensor) -> Tensor:
    return term if total is None else total + term


def _needed(value: Tensor | None, name: str, weight: str) -> Tensor:
    if value is None:
        raise InputError(f"{name} is needed when {weight} is not 0, got None.")
    return value
