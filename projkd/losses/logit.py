"""The logit losses as parameter objects, and the estimator's ``logit_loss``.

:class:`KDLoss`, :class:`DKDLoss` and :class:`DISTLoss` are thin objects over
the pure functions of :mod:`projkd.losses.functional`, with scikit-learn's
``get_params``/``set_params`` (:class:`~projkd.losses.LossParameters`): they
clone, pickle, and take part in a search through the estimator's
``logit_loss__<option>`` parameters (``logit_loss__standardize=True`` is
logit standardization). Each is called as
``loss(student_logits, teacher_logits, y, temperature=T)`` and returns
``(loss, terms)``, ``terms`` the unweighted parts the history records.
:func:`resolve_logit_loss` turns the estimator's ``logit_loss`` (a shortcut,
an object or a user's callable) into what :func:`~projkd.losses.distillation_loss`
calls, refusing what cannot work before any training.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError
from ..utils import takes_argument
from .functional import dist_parts, dkd_parts, kd_loss
from .params import LossParameters, build_loss

__all__ = [
    "LOGIT_LOSSES",
    "BoundLogitLoss",
    "DISTLoss",
    "DKDLoss",
    "KDLoss",
    "LogitLoss",
    "check_logit_loss",
    "logit_loss_terms",
    "resolve_logit_loss",
]


class LogitLoss(LossParameters):
    """The base of the logit-loss objects: parameters as in scikit-learn.

    A subclass stores its ``__init__`` arguments unchanged (they are its
    parameters, see :class:`~projkd.losses.LossParameters`), names the parts
    it returns in ``terms``, and implements
    ``__call__(student_logits, teacher_logits, y, *, temperature)`` returning
    ``(loss, parts)``. :meth:`schedule` is the factor of the loss's weight at
    an epoch (1 unless the loss warms up).
    """

    def schedule(self, epoch: int, n_epochs: int) -> float:
        """The factor of the loss's weight at ``epoch`` (from 1) of ``n_epochs``."""
        return 1.0

    def __call__(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        y: Tensor,
        *,
        temperature: float = 4.0,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError


class KDLoss(LogitLoss):
    """Hinton's KD, ``T^2 KL(softmax(z_t / T) || softmax(z_s / T))``.

    The estimator's default logit loss (``logit_loss="kd"``); see
    :func:`~projkd.losses.kd_loss`.

    Parameters
    ----------
    standardize : bool, default=False
        Whether to standardize both networks' logits first (logit
        standardization, :func:`~projkd.losses.standardize_logits`); the
        authors then use ``temperature=2`` and ``kd_weight=9`` on CIFAR-100.

    References
    ----------
    Hinton, Vinyals, Dean. "Distilling the Knowledge in a Neural Network",
    arXiv:1503.02531.

    Sun, Ren, Li, Wang, Cao. "Logit Standardization in Knowledge
    Distillation", CVPR 2024, arXiv:2403.01427.

    Examples
    --------
    >>> import torch
    >>> z = torch.zeros(2, 3)
    >>> loss, terms = KDLoss()(z, z, torch.tensor([0, 1]), temperature=4.0)
    >>> float(loss), terms
    (0.0, {})
    >>> KDLoss(standardize=True)
    KDLoss(standardize=True)
    """

    _flags = ("standardize",)

    def __init__(self, standardize: bool = False) -> None:
        self.standardize = standardize

    def __call__(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        y: Tensor,
        *,
        temperature: float = 4.0,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        loss = kd_loss(
            student_logits,
            teacher_logits,
            temperature=temperature,
            standardize=self.standardize,
        )
        return loss, {}


class DKDLoss(LogitLoss):
    """Decoupled KD: ``alpha * TCKD + beta * NCKD``, its weight warmed up.

    See :func:`~projkd.losses.dkd_loss`. The history records both parts,
    unweighted, as ``tckd`` (target class) and ``nckd`` (non-target classes).

    Parameters
    ----------
    alpha : float, default=1.0
        Weight of the target-class part.
    beta : float, default=8.0
        Weight of the non-target-class part (the authors' CIFAR-100 default;
        6 or 2 for some pairs).
    warmup : float, default=20/240
        The fraction of the run over which the loss's weight grows linearly:
        at epoch ``e`` (from 1) of ``n``, the weight is multiplied by
        ``min(e / (warmup * n), 1)``; 0 switches the warm-up off. The default
        is the authors' 20 epochs of 240, scaled to the run.
    standardize : bool, default=False
        Whether to standardize both networks' logits first (logit
        standardization, :func:`~projkd.losses.standardize_logits`); its
        authors then use ``temperature=2`` and nine times ``alpha`` and
        ``beta``.

    References
    ----------
    Zhao, Cui, Song, Qiu, Liang. "Decoupled Knowledge Distillation", CVPR 2022,
    arXiv:2203.08679.

    Sun, Ren, Li, Wang, Cao. "Logit Standardization in Knowledge
    Distillation", CVPR 2024, arXiv:2403.01427.

    Examples
    --------
    >>> loss = DKDLoss(beta=6.0)
    >>> loss
    DKDLoss(alpha=1.0, beta=6.0, standardize=False, warmup=0.08333333333333333)
    >>> loss.schedule(epoch=1, n_epochs=240), loss.schedule(epoch=30, n_epochs=240)
    (0.05, 1.0)
    """

    terms = ("tckd", "nckd")
    _bounds = {"alpha": math.inf, "beta": math.inf, "warmup": 1.0}
    _flags = ("standardize",)

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 8.0,
        warmup: float = 20 / 240,
        standardize: bool = False,
    ) -> None:
        self.alpha = alpha
        self.beta = beta
        self.warmup = warmup
        self.standardize = standardize

    def schedule(self, epoch: int, n_epochs: int) -> float:
        """``min(epoch / (warmup * n_epochs), 1)``; 1 outside a fit (epoch 0)."""
        length = self.warmup * n_epochs
        if length <= 0 or epoch < 1:
            return 1.0
        return min(epoch / length, 1.0)

    def __call__(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        y: Tensor,
        *,
        temperature: float = 4.0,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        tckd, nckd = dkd_parts(
            student_logits,
            teacher_logits,
            y,
            temperature=temperature,
            standardize=self.standardize,
        )
        return self.alpha * tckd + self.beta * nckd, {"tckd": tckd, "nckd": nckd}


class DISTLoss(LogitLoss):
    """DIST: ``beta * inter-class + gamma * intra-class relation``.

    See :func:`~projkd.losses.dist_loss`. The history records both relations,
    unweighted, as ``inter`` and ``intra``. The intra-class relation is taken
    over each batch (at least 2 samples; with data-parallel training, over
    each process's shard).

    Parameters
    ----------
    beta : float, default=1.0
        Weight of the inter-class relation.
    gamma : float, default=1.0
        Weight of the intra-class relation.
    standardize : bool, default=False
        Whether to standardize both networks' logits first
        (:func:`~projkd.losses.standardize_logits`); the authors of logit
        standardization published no DIST variant: this is DIST on the
        standardized logits.

    References
    ----------
    Huang, You, Wang, Qian, Xu. "Knowledge Distillation from A Stronger
    Teacher", NeurIPS 2022, arXiv:2205.10536.

    Examples
    --------
    >>> DISTLoss(gamma=2.0).set_params(beta=0.5)
    DISTLoss(beta=0.5, gamma=2.0, standardize=False)
    """

    terms = ("inter", "intra")
    _bounds = {"beta": math.inf, "gamma": math.inf}
    _flags = ("standardize",)

    @property
    def needs_pairs(self) -> bool:  # type: ignore[override]
        """The intra-class relation correlates each class over the batch."""
        return bool(self.gamma)

    def __init__(
        self, beta: float = 1.0, gamma: float = 1.0, standardize: bool = False
    ) -> None:
        self.beta = beta
        self.gamma = gamma
        self.standardize = standardize

    def __call__(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        y: Tensor,
        *,
        temperature: float = 4.0,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        inter, intra = dist_parts(
            student_logits,
            teacher_logits,
            temperature=temperature,
            standardize=self.standardize,
        )
        return self.beta * inter + self.gamma * intra, {"inter": inter, "intra": intra}


#: the estimator's ``logit_loss`` shortcuts
LOGIT_LOSSES: dict[str, type[LogitLoss]] = {
    "kd": KDLoss,
    "dkd": DKDLoss,
    "dist": DISTLoss,
}

LogitLossFn = Callable[..., tuple[Tensor, dict[str, Tensor]]]


@dataclass(frozen=True)
class BoundLogitLoss:
    """A logit loss with the estimator's temperature, called on three tensors.

    Attributes
    ----------
    loss : LogitLoss or callable
    temperature : float or None
        Passed as ``temperature=`` to a loss that takes it; None otherwise.
    """

    loss: LogitLossFn
    temperature: float | None

    def __call__(
        self, student_logits: Tensor, teacher_logits: Tensor, y: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        if self.temperature is None:
            return self.loss(student_logits, teacher_logits, y)
        return self.loss(
            student_logits, teacher_logits, y, temperature=self.temperature
        )

    def schedule(self, epoch: int, n_epochs: int) -> float:
        """The factor of ``kd_weight`` at ``epoch`` (from 1) of ``n_epochs``."""
        if isinstance(self.loss, LogitLoss):
            return self.loss.schedule(epoch, n_epochs)
        return 1.0


def resolve_logit_loss(
    logit_loss: Any,
    *,
    kd_weight: float,
    temperature: float,
    params: dict[str, Any] | None = None,
) -> BoundLogitLoss:
    """The estimator's ``logit_loss`` as :func:`distillation_loss` calls it.

    Parameters
    ----------
    logit_loss : {"kd", "dkd", "dist"}, LogitLoss, class or callable
        A shortcut (the loss class), a loss object, a class (built with
        ``params``, as skorch builds its criterion), or a callable
        ``(student_logits, teacher_logits, y) -> (loss, terms)`` (given
        ``temperature=`` too when its signature takes it), such as a
        ``torch.nn.Module``.
    kd_weight : float
        The loss's weight; 0 is refused for anything but KD.
    temperature : float
    params : dict or None, default=None
        The estimator's ``logit_loss__*`` options: the arguments of a
        shortcut or class, or set on a copy of a loss object.

    Returns
    -------
    loss : BoundLogitLoss

    Raises
    ------
    InputError
        For an unknown shortcut, an option the loss does not have, a loss
        object's parameter out of range, or a logit loss other than KD with
        ``kd_weight=0``.

    Examples
    --------
    >>> resolve_logit_loss("dkd", kd_weight=1.0, temperature=4.0,
    ...                    params={"beta": 6.0}).loss
    DKDLoss(alpha=1.0, beta=6.0, standardize=False, warmup=0.08333333333333333)
    """
    loss = build_loss(
        logit_loss,
        params or {},
        parameter="logit_loss",
        shortcuts=LOGIT_LOSSES,
        example="logit_loss='dkd', logit_loss__beta=6.0",
        signature="(student_logits, teacher_logits, y) -> (loss, terms)",
    )
    if not kd_weight and not isinstance(loss, KDLoss):
        raise InputError(
            f"logit_loss={logit_loss!r} with kd_weight=0 does nothing: kd_weight "
            "is the weight of the logit loss. Give kd_weight a positive value "
            "(e.g. kd_weight=1.0, DKD's recipe), or leave logit_loss='kd'."
        )
    bound = temperature if takes_argument(loss, "temperature") else None
    return BoundLogitLoss(loss, bound)


def check_logit_loss(loss: BoundLogitLoss, n_classes: int, *, name: str) -> None:
    """Call ``loss`` on a small batch of made-up logits, before any training.

    A user's callable with the wrong signature, or one that returns the
    wrong thing, fails here with a message naming ``logit_loss``, not at
    the first training batch.

    Raises
    ------
    InputError
        Naming the loss (``name``) and what went wrong.
    """
    student = torch.linspace(-1.0, 1.0, 2 * n_classes).reshape(2, n_classes)
    teacher = student.flip(1)
    y = torch.tensor([0, 1 % n_classes])
    try:
        result = loss(student.requires_grad_(), teacher, y)
        valid = (
            isinstance(result, tuple)
            and len(result) == 2
            and isinstance(result[0], torch.Tensor)
            and result[0].numel() == 1
            and isinstance(result[1], dict)
        )
    except Exception as error:  # a user's callable: anything may go wrong
        raise InputError(
            f"logit_loss={name} failed on a batch of 2 samples of "
            f"{n_classes} classes: {type(error).__name__}: {error}. A logit loss "
            "is called as loss(student_logits, teacher_logits, y) (plus "
            "temperature= when it takes it) and returns (loss, terms)."
        ) from error
    if not valid:
        raise InputError(
            f"logit_loss={name} returned {type(result).__name__}; a logit loss "
            "returns (loss, terms): a scalar tensor and a dict of its named "
            "parts ({} for none)."
        )


def logit_loss_terms(logit_loss: Any) -> tuple[str, ...]:
    """The names of the parts ``logit_loss`` returns (``()`` when unknown).

    A user's callable may list them in a ``terms`` attribute to have the
    history's epoch means of them; otherwise they are recorded per batch.
    """
    if isinstance(logit_loss, str):
        logit_loss = LOGIT_LOSSES.get(logit_loss, logit_loss)
    return tuple(getattr(logit_loss, "terms", ()))
