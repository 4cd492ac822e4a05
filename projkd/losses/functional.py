"""The distillation losses as plain functions on tensors, keyword-only options.

Hinton's KD (:func:`kd_loss`), decoupled KD (:func:`dkd_loss`, Zhao et al.,
arXiv:2203.08679), DIST (:func:`dist_loss`, Huang et al., arXiv:2205.10536),
each optionally on standardized logits (:func:`standardize_logits`, Sun et
al., arXiv:2403.01427); the feature terms: PEFD's cosine
(:func:`feature_loss`, Chen et al., arXiv:2310.17183) and the normalised
projector's (:func:`srd_loss`, Miles and Mikolajczyk, arXiv:2303.11098).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "dist_loss",
    "dist_parts",
    "dkd_loss",
    "dkd_parts",
    "feature_loss",
    "kd_loss",
    "srd_loss",
    "standardize_logits",
]


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
    _check_features(projected, teacher_features)
    return (1.0 - F.cosine_similarity(projected, teacher_features, dim=1)).mean()


def srd_loss(
    projected: Tensor, teacher_features: Tensor, *, eps: float = 1e-4
) -> Tensor:
    """The normalised projector's feature term, ``log sum |BN(f_s) - BN(f_t)|^4``.

    Each argument is normalised per dimension with the statistics of the
    batch (mean, biased variance, ``eps`` added to the variance, no affine
    map), as a ``torch.nn.BatchNorm1d(D, eps=eps, affine=False)`` in
    training mode does; then the fourth powers of the differences are summed
    over the batch and the dimensions, and the logarithm taken (no epsilon
    inside it: identical batches give ``-inf``). The logarithm makes the
    gradient scale-free, ``4 (a - b)^3 / sum |a - b|^4``. The sums run in
    float32 at least: a sum of fourth powers overflows float16.

    Parameters
    ----------
    projected : torch.Tensor of shape (N, D)
        The student's features after the projector; ``N >= 2``.
    teacher_features : torch.Tensor of shape (N, D)
        The teacher's features.
    eps : float, default=1e-4
        Added to each dimension's variance (the authors' value); > 0.

    Returns
    -------
    loss : torch.Tensor, scalar

    References
    ----------
    Miles, Mikolajczyk. "Understanding the Role of the Projector in Knowledge
    Distillation", AAAI 2024, arXiv:2303.11098.

    Examples
    --------
    Two samples normalise to -1 and 1 in each dimension; the second
    dimension runs opposite ways, a difference of 2 in each sample:

    >>> import math, torch
    >>> s = torch.tensor([[0.0, 3.0], [2.0, 1.0]])
    >>> t = torch.tensor([[0.0, 10.0], [4.0, 30.0]])
    >>> math.isclose(srd_loss(s, t), math.log(2 * 2**4), rel_tol=1e-3)
    True
    """
    _check_features(projected, teacher_features)
    if projected.ndim != 2 or projected.shape[0] < 2:
        raise ValueError(
            "srd_loss normalises each dimension with the batch's statistics, "
            "which needs features of shape (N, D) with N >= 2; got "
            f"{tuple(projected.shape)}."
        )
    if not eps > 0:
        raise ValueError(f"srd_loss's eps must be a number > 0, got {eps!r}.")
    dtype = torch.promote_types(projected.dtype, torch.float32)

    def normalised(x: Tensor) -> Tensor:  # BatchNorm1d(affine=False), training
        return F.batch_norm(x.to(dtype), None, None, training=True, eps=eps)

    difference = normalised(projected) - normalised(teacher_features)
    return difference.abs().pow(4).sum().log()


def standardize_logits(z: Tensor) -> Tensor:
    """Each sample's logits z-scored over the classes: logit standardization.

    ``(z - mean(z)) / (1e-7 + std(z))`` along the last axis, ``std`` the
    unbiased one (dividing by ``C - 1``), as the authors' code computes it.
    A KD loss on standardized logits ignores each network's shift and scale
    of its logits: the student matches the teacher's ranking of the classes,
    not its logit range.

    Parameters
    ----------
    z : torch.Tensor of shape (..., C)
        ``C >= 2``.

    Returns
    -------
    standardized : torch.Tensor of the same shape

    References
    ----------
    Sun, Ren, Li, Wang, Cao. "Logit Standardization in Knowledge
    Distillation", CVPR 2024, arXiv:2403.01427.

    Examples
    --------
    >>> import torch
    >>> z = torch.tensor([[1.0, 2.0, 3.0], [10.0, 30.0, 20.0]])
    >>> standardize_logits(z).round(decimals=4)
    tensor([[-1.,  0.,  1.],
            [-1.,  1.,  0.]])
    """
    if z.ndim == 0 or z.shape[-1] < 2:
        raise ValueError(
            "Standardizing logits divides by their standard deviation over the "
            f"classes, which needs at least 2 classes; got shape {tuple(z.shape)}."
        )
    return (z - z.mean(-1, keepdim=True)) / (1e-7 + z.std(-1, keepdim=True))


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float = 4.0,
    standardize: bool = False,
) -> Tensor:
    """Hinton's knowledge-distillation loss.

    ``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over
    the batch. The ``T^2`` keeps gradient magnitudes independent of ``T``.

    Parameters
    ----------
    student_logits, teacher_logits : torch.Tensor of shape (N, C)
    temperature : float, default=4.0
    standardize : bool, default=False
        Whether to standardize both networks' logits first
        (:func:`standardize_logits`); the loss is otherwise unchanged, ``T``
        and the ``T^2`` factor included (the authors call ``T`` the base
        temperature and use 2 with a KD weight of 9 on CIFAR-100).

    Returns
    -------
    loss : torch.Tensor, scalar

    References
    ----------
    Hinton, Vinyals, Dean. "Distilling the Knowledge in a Neural Network",
    arXiv:1503.02531.

    Sun, Ren, Li, Wang, Cao. "Logit Standardization in Knowledge
    Distillation", CVPR 2024, arXiv:2403.01427.

    Examples
    --------
    >>> import torch
    >>> z = torch.tensor([[2.0, 0.0, -1.0]])
    >>> float(kd_loss(3 * z + 5, z, standardize=True)) < 1e-6
    True
    """
    _check_logits(student_logits, teacher_logits)
    student_logits, teacher_logits = _standardized(
        student_logits, teacher_logits, standardize
    )
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def dkd_parts(
    student_logits: Tensor,
    teacher_logits: Tensor,
    y: Tensor,
    *,
    temperature: float = 4.0,
    standardize: bool = False,
) -> tuple[Tensor, Tensor]:
    """The two parts of decoupled KD: target-class and non-target-class KD.

    With ``p = softmax(z / T)`` and ``t`` the target class of each sample,
    ``TCKD = T^2 KL(b^T || b^S)`` on the binary split ``b = (p_t, 1 - p_t)``,
    and ``NCKD = T^2 KL(p̂^T || p̂^S)`` with ``p̂`` the softmax of the
    non-target logits alone (``p_i / (1 - p_t)``, ``i != t``); both are batch
    means. Every logarithm is a log-softmax or a log-sum-exp of logits, never
    the ``log`` of a probability that can underflow.

    Parameters
    ----------
    student_logits, teacher_logits : torch.Tensor of shape (N, C)
        ``C >= 2``.
    y : torch.Tensor of shape (N,)
        Class indices.
    temperature : float, default=4.0
    standardize : bool, default=False
        Whether to standardize both networks' logits first
        (:func:`standardize_logits`).

    Returns
    -------
    target, non_target : torch.Tensor, scalars
        TCKD and NCKD (NCKD is 0 for two classes: one non-target class).

    References
    ----------
    Zhao, Cui, Song, Qiu, Liang. "Decoupled Knowledge Distillation", CVPR 2022,
    arXiv:2203.08679, equations (1)-(7).

    Examples
    --------
    >>> import torch
    >>> z = torch.tensor([[2.0, 0.0, -1.0]])
    >>> [float(part) for part in dkd_parts(z, z, torch.tensor([0]))]
    [0.0, 0.0]
    """
    _check_logits(student_logits, teacher_logits, matrix=True)
    n, c = student_logits.shape
    if c < 2:
        raise ValueError(f"DKD needs at least 2 classes, got logits of {c} class.")
    if y.shape != (n,):
        raise ValueError(
            f"y must hold one class index per sample, shape ({n},), got "
            f"{tuple(y.shape)}."
        )
    student_logits, teacher_logits = _standardized(
        student_logits, teacher_logits, standardize
    )
    # gathered, not masked: a boolean mask's result has a data-dependent
    # shape, which would break a compiled training step's graph
    target = y.long().reshape(n, 1)
    columns = torch.arange(c - 1, device=y.device).expand(n, c - 1)
    others = columns + (columns >= target).long()  # the non-target classes

    def binary_and_rest(logits: Tensor) -> tuple[Tensor, Tensor]:
        z = logits / temperature
        rest = z.gather(1, others)  # the non-target logits, in class order
        log_total = torch.logsumexp(z, dim=1, keepdim=True)
        log_binary = torch.cat(
            [
                z.gather(1, target) - log_total,  # log p_t
                torch.logsumexp(rest, dim=1, keepdim=True) - log_total,  # log(1-p_t)
            ],
            dim=1,
        )
        return log_binary, F.log_softmax(rest, dim=1)

    student_binary, student_rest = binary_and_rest(student_logits)
    teacher_binary, teacher_rest = binary_and_rest(teacher_logits)
    scale = temperature**2
    tckd = F.kl_div(
        student_binary, teacher_binary, reduction="batchmean", log_target=True
    )
    nckd = F.kl_div(student_rest, teacher_rest, reduction="batchmean", log_target=True)
    return tckd * scale, nckd * scale


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    y: Tensor,
    *,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    standardize: bool = False,
) -> Tensor:
    """Decoupled knowledge distillation: ``alpha * TCKD + beta * NCKD``.

    The two parts are those of :func:`dkd_parts`: KD on the binary split
    target / non-target, and KD among the non-target classes, each scaled by
    ``T^2`` and averaged over the batch. KD itself is
    ``TCKD + (1 - p_t^T) NCKD``: DKD frees the weight of NCKD, which KD ties
    to the teacher's confidence.

    Parameters
    ----------
    student_logits, teacher_logits : torch.Tensor of shape (N, C)
    y : torch.Tensor of shape (N,)
        Class indices (the target class of each sample).
    alpha : float, default=1.0
        Weight of the target-class part (TCKD).
    beta : float, default=8.0
        Weight of the non-target-class part (NCKD); the authors use 8 on
        CIFAR-100 (6 or 2 for some pairs).
    temperature : float, default=4.0
    standardize : bool, default=False
        Whether to standardize both networks' logits first
        (:func:`standardize_logits`); with it the authors of logit
        standardization use ``T = 2`` and nine times DKD's ``alpha`` and
        ``beta``.

    Returns
    -------
    loss : torch.Tensor, scalar

    References
    ----------
    Zhao, Cui, Song, Qiu, Liang. "Decoupled Knowledge Distillation", CVPR 2022,
    arXiv:2203.08679.

    Examples
    --------
    >>> import torch
    >>> z, y = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])
    >>> float(dkd_loss(z, z, y))
    0.0
    """
    tckd, nckd = dkd_parts(
        student_logits,
        teacher_logits,
        y,
        temperature=temperature,
        standardize=standardize,
    )
    return alpha * tckd + beta * nckd


def _pearson(a: Tensor, b: Tensor, dim: int) -> Tensor:
    """Pearson correlation of ``a`` and ``b`` along ``dim`` (centred cosine)."""
    return F.cosine_similarity(
        a - a.mean(dim, keepdim=True), b - b.mean(dim, keepdim=True), dim=dim, eps=1e-8
    )


def dist_parts(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float = 1.0,
    standardize: bool = False,
) -> tuple[Tensor, Tensor]:
    """The inter- and intra-class relations of DIST.

    With ``P = softmax(z / T)`` row-wise (one row per sample), the
    inter-class relation is ``T^2 (1 - mean_i rho(P^S_i, P^T_i))`` (each
    sample's class distribution) and the intra-class relation
    ``T^2 (1 - mean_j rho(P^S_:j, P^T_:j))`` (each class's scores over the
    batch), ``rho`` the Pearson correlation.

    The intra-class relation depends on the whole batch: it needs at least 2
    samples, and under data-parallel training it is computed on each
    process's shard of the batch (the logits are not gathered), as in the
    authors' code.

    Parameters
    ----------
    student_logits, teacher_logits : torch.Tensor of shape (N, C)
        ``N >= 2``.
    temperature : float, default=1.0
    standardize : bool, default=False
        Whether to standardize both networks' logits first
        (:func:`standardize_logits`). The authors of logit standardization
        published no DIST variant; this is DIST on the standardized logits.

    Returns
    -------
    inter, intra : torch.Tensor, scalars

    References
    ----------
    Huang, You, Wang, Qian, Xu. "Knowledge Distillation from A Stronger
    Teacher", NeurIPS 2022, arXiv:2205.10536, equations (5)-(8).

    Examples
    --------
    >>> import torch
    >>> z = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    >>> [round(float(part), 6) for part in dist_parts(z, z)]
    [0.0, 0.0]
    """
    _check_logits(student_logits, teacher_logits, matrix=True)
    if student_logits.shape[0] < 2:
        raise ValueError(
            "DIST's intra-class relation correlates each class's scores over the "
            f"batch, which needs at least 2 samples; got a batch of "
            f"{student_logits.shape[0]}. Use batches of 2 or more (with skorch, "
            "iterator_train__drop_last=True drops a last batch of 1)."
        )
    student_logits, teacher_logits = _standardized(
        student_logits, teacher_logits, standardize
    )
    p_student = F.softmax(student_logits / temperature, dim=1)
    p_teacher = F.softmax(teacher_logits / temperature, dim=1)
    scale = temperature**2
    inter = 1.0 - _pearson(p_student, p_teacher, dim=1).mean()
    intra = 1.0 - _pearson(p_student, p_teacher, dim=0).mean()
    return inter * scale, intra * scale


def dist_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
    standardize: bool = False,
) -> Tensor:
    """DIST: ``beta * inter-class relation + gamma * intra-class relation``.

    The relations are those of :func:`dist_parts`: one minus the mean Pearson
    correlation between the student's and the teacher's ``softmax(z / T)``,
    over each sample's classes (inter) and over each class's samples in the
    batch (intra), each scaled by ``T^2``. A correlation, unlike a KL
    divergence, ignores the scale and shift of the predictions, which is what
    lets a student learn from a much stronger teacher.

    Parameters
    ----------
    student_logits, teacher_logits : torch.Tensor of shape (N, C)
        ``N >= 2`` (the intra-class relation is taken over the batch).
    beta : float, default=1.0
        Weight of the inter-class relation.
    gamma : float, default=1.0
        Weight of the intra-class relation.
    temperature : float, default=1.0
        The authors use 1 on ImageNet and 4 on CIFAR-100.
    standardize : bool, default=False
        Whether to standardize both networks' logits first
        (:func:`standardize_logits`).

    Returns
    -------
    loss : torch.Tensor, scalar

    References
    ----------
    Huang, You, Wang, Qian, Xu. "Knowledge Distillation from A Stronger
    Teacher", NeurIPS 2022, arXiv:2205.10536.

    Examples
    --------
    >>> import torch
    >>> z = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    >>> round(float(dist_loss(z, z)), 6)
    0.0
    """
    inter, intra = dist_parts(
        student_logits,
        teacher_logits,
        temperature=temperature,
        standardize=standardize,
    )
    return beta * inter + gamma * intra


def _standardized(
    student_logits: Tensor, teacher_logits: Tensor, standardize: bool
) -> tuple[Tensor, Tensor]:
    if not standardize:
        return student_logits, teacher_logits
    return standardize_logits(student_logits), standardize_logits(teacher_logits)


def _check_features(projected: Tensor, teacher_features: Tensor) -> None:
    if projected.shape != teacher_features.shape:
        raise ValueError(
            f"The projected student features have shape {tuple(projected.shape)} "
            f"but the teacher's features {tuple(teacher_features.shape)}."
        )


def _check_logits(
    student_logits: Tensor, teacher_logits: Tensor, *, matrix: bool = False
) -> None:
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"The student's logits have shape {tuple(student_logits.shape)} but the "
            f"teacher's {tuple(teacher_logits.shape)}; both must predict the same "
            "classes."
        )
    if matrix and student_logits.ndim != 2:
        raise ValueError(
            f"The logits must have shape (N, C), got {tuple(student_logits.shape)}."
        )
