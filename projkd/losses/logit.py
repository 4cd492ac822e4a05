"""The logit losses as parameter objects, and the estimator's ``logit_loss``.

:class:`KDLoss`, :class:`DKDLoss` and :class:`DISTLoss` are thin objects over
the pure functions of :mod:`projkd.losses.functional`, with scikit-learn's
``get_params``/``set_params`` (as the kernels of its Gaussian processes): they
clone, pickle, and take part in a search through the estimator's
``logit_loss__<option>`` parameters. Each is called as
``loss(student_logits, teacher_logits, y, temperature=T)`` and returns
``(loss, terms)``, ``terms`` the unweighted parts the history records.
:func:`resolve_logit_loss` turns the estimator's ``logit_loss`` (a shortcut,
an object or a user's callable) into what :func:`~projkd.losses.distillation_loss`
calls, refusing what cannot work before any training.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Real
from typing import Any, ClassVar

import torch
from sklearn.base import clone
from torch import Tensor

from ..errors import InputError
from ..utils import takes_argument
from .functional import dist_parts, dkd_parts, kd_loss

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


class LogitLoss:
    """The base of the logit-loss objects: parameters as in scikit-learn.

    A subclass stores its ``__init__`` arguments unchanged (they are its
    parameters), names the parts it returns in ``terms``, and implements
    ``__call__(student_logits, teacher_logits, y, *, temperature)`` returning
    ``(loss, parts)``. :meth:`schedule` is the factor of the loss's weight at
    an epoch (1 unless the loss warms up).
    """

    #: the unweighted parts ``__call__`` returns, recorded in the history
    terms: ClassVar[tuple[str, ...]] = ()
    #: whether a batch of one sample is meaningless to it (a batch statistic)
    needs_pairs: bool = False
    #: the parameters whose value must lie in [0, upper bound]
    _bounds: ClassVar[dict[str, float]] = {}

    @classmethod
    def _get_param_names(cls) -> list[str]:
        if cls.__init__ is object.__init__:
            return []  # no parameters (KDLoss)
        signature = inspect.signature(cls.__init__)
        return sorted(name for name in signature.parameters if name != "self")

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The loss's parameters, as :meth:`sklearn.base.BaseEstimator.get_params`.

        Parameters
        ----------
        deep : bool, default=True
            Unused (a loss holds no estimator); kept for scikit-learn.

        Returns
        -------
        params : dict
        """
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any) -> LogitLoss:
        """Set the loss's parameters.

        Returns
        -------
        self : LogitLoss
        """
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for {type(self).__name__}; its "
                    f"parameters are {valid or 'none'}."
                )
            setattr(self, name, value)
        return self

    def check(self) -> None:
        """Raise if a parameter is out of range (``fit`` calls it)."""
        for name, upper in self._bounds.items():
            value = getattr(self, name)
            if (
                not isinstance(value, Real)
                or isinstance(value, bool)
                or not 0 <= float(value) <= upper
            ):
                limits = (
                    "a number >= 0" if upper == float("inf") else f"in [0, {upper}]"
                )
                raise ValueError(
                    f"{type(self).__name__}'s {name} must be {limits}, got {value!r}."
                )

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

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.get_params() == other.get_params()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value


_POSITIVE = float("inf")


class KDLoss(LogitLoss):
    """Hinton's KD, ``T^2 KL(softmax(z_t / T) || softmax(z_s / T))``.

    The estimator's default logit loss (``logit_loss="kd"``); see
    :func:`~projkd.losses.kd_loss`.

    References
    ----------
    Hinton, Vinyals, Dean. "Distilling the Knowledge in a Neural Network",
    arXiv:1503.02531.

    Examples
    --------
    >>> import torch
    >>> z = torch.zeros(2, 3)
    >>> loss, terms = KDLoss()(z, z, torch.tensor([0, 1]), temperature=4.0)
    >>> float(loss), terms
    (0.0, {})
    """

    def __call__(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        y: Tensor,
        *,
        temperature: float = 4.0,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        return kd_loss(student_logits, teacher_logits, temperature=temperature), {}


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

    References
    ----------
    Zhao, Cui, Song, Qiu, Liang. "Decoupled Knowledge Distillation", CVPR 2022,
    arXiv:2203.08679.

    Examples
    --------
    >>> loss = DKDLoss(beta=6.0)
    >>> loss
    DKDLoss(alpha=1.0, beta=6.0, warmup=0.08333333333333333)
    >>> loss.schedule(epoch=1, n_epochs=240), loss.schedule(epoch=30, n_epochs=240)
    (0.05, 1.0)
    """

    terms = ("tckd", "nckd")
    _bounds = {"alpha": _POSITIVE, "beta": _POSITIVE, "warmup": 1.0}

    def __init__(
        self, alpha: float = 1.0, beta: float = 8.0, warmup: float = 20 / 240
    ) -> None:
        self.alpha = alpha
        self.beta = beta
        self.warmup = warmup

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
            student_logits, teacher_logits, y, temperature=temperature
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

    References
    ----------
    Huang, You, Wang, Qian, Xu. "Knowledge Distillation from A Stronger
    Teacher", NeurIPS 2022, arXiv:2205.10536.

    Examples
    --------
    >>> DISTLoss(gamma=2.0).set_params(beta=0.5)
    DISTLoss(beta=0.5, gamma=2.0)
    """

    terms = ("inter", "intra")
    _bounds = {"beta": _POSITIVE, "gamma": _POSITIVE}

    @property
    def needs_pairs(self) -> bool:  # type: ignore[override]
        """The intra-class relation correlates each class over the batch."""
        return bool(self.gamma)

    def __init__(self, beta: float = 1.0, gamma: float = 1.0) -> None:
        self.beta = beta
        self.gamma = gamma

    def __call__(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        y: Tensor,
        *,
        temperature: float = 4.0,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        inter, intra = dist_parts(
            student_logits, teacher_logits, temperature=temperature
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


def _as_object(logit_loss: Any) -> Any:
    if isinstance(logit_loss, str) and logit_loss in LOGIT_LOSSES:
        return LOGIT_LOSSES[logit_loss]
    return logit_loss


def _configured(logit_loss: Any, params: dict[str, Any]) -> Any:
    """The loss object ``logit_loss`` names, built or copied with the
    ``logit_loss__*`` options ``params`` (the user's object is never
    modified)."""
    loss = _as_object(logit_loss)
    given = ", ".join(f"logit_loss__{k}={v!r}" for k, v in params.items())
    if isinstance(loss, type):  # a class, built as skorch builds a criterion
        try:
            return loss(**params)
        except TypeError as error:
            raise InputError(
                f"logit_loss={_name(logit_loss)} could not be built with "
                f"{given or 'no arguments'}: {error}."
            ) from error
    if not params:
        return loss
    if not hasattr(loss, "set_params"):
        raise InputError(
            f"{given} sets an option of the logit loss, but logit_loss={loss!r} "
            "has no options to set. Use a shortcut or a loss object with "
            "them, e.g. logit_loss='dkd', logit_loss__beta=6.0."
        )
    try:
        return clone(loss).set_params(**params)
    except ValueError as error:
        raise InputError(f"{given}: {error}") from error


def _name(value: Any) -> str:
    return getattr(value, "__qualname__", None) or repr(value)


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
    DKDLoss(alpha=1.0, beta=6.0, warmup=0.08333333333333333)
    """
    loss = _configured(logit_loss, params or {})
    if isinstance(loss, str) or not callable(loss):
        raise InputError(
            f"logit_loss={logit_loss!r} is not a logit loss; use one of "
            f"{sorted(LOGIT_LOSSES)}, a loss object such as DKDLoss(beta=6.0), or "
            "a callable (student_logits, teacher_logits, y) -> (loss, terms)."
        )
    if isinstance(loss, LogitLoss):
        try:
            loss.check()
        except ValueError as error:
            raise InputError(str(error)) from None
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
    return tuple(getattr(_as_object(logit_loss), "terms", ()))
