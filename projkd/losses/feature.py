"""The feature losses as parameter objects, and the estimator's ``feature_loss``.

:class:`CosineLoss` (PEFD's ``1 - cos``) and :class:`SRDLoss` (the normalised
projector's ``log sum |BN(f_s) - BN(f_t)|^4``) are thin objects over the pure
functions of :mod:`projkd.losses.functional`, with scikit-learn's parameters
(:class:`~projkd.losses.LossParameters`): they clone, pickle, and take part
in a search through the estimator's ``feature_loss__<option>`` parameters.
Each is called as ``loss(projected, teacher_features)`` and returns a scalar
tensor. :func:`resolve_feature_loss` turns the estimator's ``feature_loss``
(a shortcut, a class, an object or a user's callable) into what
:func:`~projkd.losses.distillation_loss` calls; :func:`check_feature_loss`
tries it on a made-up batch before any training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError
from .functional import feature_loss, srd_loss
from .params import LossParameters, build_loss

__all__ = [
    "FEATURE_LOSSES",
    "CosineLoss",
    "FeatureLoss",
    "SRDLoss",
    "check_feature_loss",
    "resolve_feature_loss",
]


class FeatureLoss(LossParameters):
    """The base of the feature-loss objects: parameters as in scikit-learn.

    A subclass stores its ``__init__`` arguments unchanged (they are its
    parameters, see :class:`~projkd.losses.LossParameters`) and implements
    ``__call__(projected, teacher_features)`` returning a scalar tensor.
    """

    def __call__(self, projected: Tensor, teacher_features: Tensor) -> Tensor:
        raise NotImplementedError


class CosineLoss(FeatureLoss):
    """PEFD's feature term, the batch mean of ``1 - cos(f(s), t)``.

    The estimator's default feature loss (``feature_loss="cosine"``); see
    :func:`~projkd.losses.feature_loss`.

    References
    ----------
    Chen, Wang, Liu, Xu, de Hoog, Kusy, Huang. "Improved Feature Distillation
    via Projector Ensemble", NeurIPS 2022, arXiv:2210.15274.

    Examples
    --------
    >>> import torch
    >>> t = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    >>> float(CosineLoss()(3 * t, t))
    0.0
    """

    def __call__(self, projected: Tensor, teacher_features: Tensor) -> Tensor:
        return feature_loss(projected, teacher_features)


class SRDLoss(FeatureLoss):
    """The normalised projector's feature term, ``log sum |BN(f_s) - BN(f_t)|^4``.

    Both the projected student features and the teacher's are normalised per
    dimension with the batch's statistics (no affine map); see
    :func:`~projkd.losses.srd_loss`. The normalisation is part of the loss,
    so the estimator's projectors stay as they are: ``n_projectors`` and
    ``projector`` apply unchanged. A batch statistic, it needs batches of at
    least 2 samples.

    Parameters
    ----------
    eps : float, default=1e-4
        Added to each dimension's batch variance (the authors' value); > 0.

    References
    ----------
    Miles, Mikolajczyk. "Understanding the Role of the Projector in Knowledge
    Distillation", AAAI 2024, arXiv:2303.11098.

    Examples
    --------
    >>> SRDLoss()
    SRDLoss(eps=0.0001)
    >>> SRDLoss().set_params(eps=1e-5)
    SRDLoss(eps=1e-05)
    """

    needs_pairs = True
    _positive = ("eps",)

    def __init__(self, eps: float = 1e-4) -> None:
        self.eps = eps

    def __call__(self, projected: Tensor, teacher_features: Tensor) -> Tensor:
        return srd_loss(projected, teacher_features, eps=self.eps)


#: the estimator's ``feature_loss`` shortcuts
FEATURE_LOSSES: dict[str, type[FeatureLoss]] = {
    "cosine": CosineLoss,
    "srd": SRDLoss,
}

FeatureLossFn = Callable[[Tensor, Tensor], Tensor]


def resolve_feature_loss(
    feature_loss: Any, *, params: dict[str, Any] | None = None
) -> FeatureLossFn:
    """The estimator's ``feature_loss`` as :func:`distillation_loss` calls it.

    Parameters
    ----------
    feature_loss : {"cosine", "srd"}, FeatureLoss, class or callable
        A shortcut (the loss class), a loss object, a class (built with
        ``params``, as skorch builds its criterion), or a callable
        ``(projected, teacher_features) -> loss`` returning a scalar tensor,
        such as a ``torch.nn.Module``.
    params : dict or None, default=None
        The estimator's ``feature_loss__*`` options: the arguments of a
        shortcut or class, or set on a copy of a loss object (the user's
        object is never modified).

    Returns
    -------
    loss : callable
        A :class:`FeatureLoss` or the user's callable.

    Raises
    ------
    InputError
        For an unknown shortcut, something not callable, an option the loss
        does not have, or a parameter out of range; the message names the
        estimator's parameter (``feature_loss__eps=...``).

    Examples
    --------
    >>> resolve_feature_loss("srd", params={"eps": 1e-5})
    SRDLoss(eps=1e-05)
    >>> resolve_feature_loss(SRDLoss(eps=-1.0))
    Traceback (most recent call last):
    ...
    projkd.errors.InputError: SRDLoss's eps must be a finite number > 0, got -1.0 (set by feature_loss__eps).
    """  # noqa: E501
    return build_loss(
        feature_loss,
        params or {},
        parameter="feature_loss",
        shortcuts=FEATURE_LOSSES,
        example="feature_loss='srd', feature_loss__eps=1e-5",
        signature="(projected, teacher_features) -> loss",
    )


def check_feature_loss(loss: FeatureLossFn, n_features: int, *, name: str) -> None:
    """Call ``loss`` on a small batch of made-up features, before any training.

    A user's callable with the wrong signature, or one that returns the
    wrong thing, fails here with a message naming ``feature_loss``, not at
    the first training batch. The batch is fixed (no random numbers drawn):
    4 samples, so that batch statistics exist, of ``n_features`` values.

    Parameters
    ----------
    loss : callable
        What :func:`resolve_feature_loss` returned.
    n_features : int
        The teacher's feature width (the projections have the same).
    name : str
        How the message names the estimator's ``feature_loss``.

    Raises
    ------
    InputError
        Naming the loss (``name``) and what went wrong.

    Examples
    --------
    >>> check_feature_loss(SRDLoss(), 8, name="'srd'")
    >>> check_feature_loss(lambda s, t: (s - t).abs(), 8, name="my_loss")
    Traceback (most recent call last):
    ...
    projkd.errors.InputError: feature_loss=my_loss returned a tensor of shape (4, 8); a feature loss returns a scalar tensor.
    """  # noqa: E501
    n = 4
    grid = torch.linspace(-1.0, 1.0, n * n_features).reshape(n, n_features)
    projected = grid.requires_grad_()
    teacher = grid.detach().flip(0) * torch.linspace(0.5, 2.0, n_features)
    try:
        result = loss(projected, teacher)
    except Exception as error:  # a user's callable: anything may go wrong
        raise InputError(
            f"feature_loss={name} failed on a batch of {n} samples of "
            f"{n_features} features: {type(error).__name__}: {error}. A feature "
            "loss is called as loss(projected, teacher_features) and returns a "
            "scalar tensor."
        ) from error
    if not isinstance(result, torch.Tensor):
        raise InputError(
            f"feature_loss={name} returned {type(result).__name__}; a feature "
            "loss returns a scalar tensor."
        )
    if result.numel() != 1:
        raise InputError(
            f"feature_loss={name} returned a tensor of shape "
            f"{tuple(result.shape)}; a feature loss returns a scalar tensor."
        )
