"""Hints: the distance between a student's and a teacher's intermediate maps.

FitNet (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015,
arXiv:1412.6550) pulls a student layer's output, through a regressor,
towards a teacher layer's with the mean squared error; PEFD's projector
ensemble applied at a stage compares them by their cosine at each
position. A map is read in *channels-last* form ``(N, P, C)`` -- ``P``
positions (the pixels of a convolutional map, the tokens of a transformer,
one for a vector) of ``C`` channels -- so that a projector acts on each
position's channels (a 1x1 convolution) and the distance is taken per
position; :func:`as_positions` brings any layer's output there, pooled to
the teacher's positions.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["HINT_LOSSES", "as_positions", "hint_loss"]

#: the distances :func:`hint_loss` takes
HINT_LOSSES = ("cosine", "mse")


def as_positions(activation: Tensor, like: Tensor | None = None) -> Tensor:
    """A layer's output as ``(N, P, C)``, pooled to ``like``'s positions.

    Parameters
    ----------
    activation : torch.Tensor
        ``(N, C, H, W)`` (a convolutional map), ``(N, L, C)`` (tokens) or
        ``(N, C)`` (a vector, one position).
    like : torch.Tensor or None, default=None
        The teacher's map in its original form: a convolutional map is
        average-pooled to its ``H x W`` (adaptive pooling, as when a student
        stage is larger), and the positions to its count.

    Returns
    -------
    positions : torch.Tensor of shape (N, P, C)

    Examples
    --------
    >>> import torch
    >>> student, teacher = torch.randn(2, 8, 8, 8), torch.randn(2, 16, 4, 4)
    >>> tuple(as_positions(student, like=teacher).shape)
    (2, 16, 8)
    """
    if activation.ndim == 4:
        if (
            like is not None
            and like.ndim == 4
            and like.shape[-2:] != activation.shape[-2:]
        ):
            size = (int(like.shape[-2]), int(like.shape[-1]))
            activation = F.adaptive_avg_pool2d(activation, size)
        activation = activation.flatten(2).transpose(1, 2)
    elif activation.ndim == 2:
        activation = activation.unsqueeze(1)
    elif activation.ndim != 3:
        raise ValueError(
            f"A hint layer's output has shape {tuple(activation.shape)}; a hint "
            "compares maps (N, C, H, W), tokens (N, L, C) or vectors (N, C)."
        )
    if like is not None:
        positions = _n_positions(like)
        if activation.shape[1] != positions:
            pooled = F.adaptive_avg_pool1d(activation.transpose(1, 2), positions)
            activation = pooled.transpose(1, 2)
    return activation


def _n_positions(activation: Tensor) -> int:
    if activation.ndim == 4:
        return activation.shape[-2] * activation.shape[-1]
    return 1 if activation.ndim == 2 else activation.shape[1]


def hint_loss(
    projected: Tensor, teacher_map: Tensor, *, kind: str = "cosine"
) -> Tensor:
    """The distance between a student's (projected) map and a teacher's.

    Parameters
    ----------
    projected : torch.Tensor of shape (N, P, C)
        The student's map at the teacher's positions, through its projector.
    teacher_map : torch.Tensor of shape (N, P, C)
        The teacher's map (:func:`as_positions`).
    kind : {"cosine", "mse"}, default="cosine"
        ``"cosine"``: the mean over samples and positions of
        ``1 - cos(projected, teacher)`` across the channels (PEFD's feature
        term at every position); ``"mse"``: FitNet's mean squared error over
        every element.

    Returns
    -------
    loss : torch.Tensor, scalar

    References
    ----------
    Romero, Ballas, Kahou, Chassang, Gatta, Bengio. "FitNets: Hints for Thin
    Deep Nets", ICLR 2015, arXiv:1412.6550.
    Chen et al. "Improved Feature Distillation via Projector Ensemble",
    NeurIPS 2022, arXiv:2210.15274.

    Examples
    --------
    >>> import torch
    >>> a = torch.ones(2, 3, 4)
    >>> float(hint_loss(a, 2 * a)), float(hint_loss(a, 2 * a, kind="mse"))
    (0.0, 1.0)
    """
    if projected.shape != teacher_map.shape:
        raise ValueError(
            f"The projected student map has shape {tuple(projected.shape)} but the "
            f"teacher's {tuple(teacher_map.shape)}."
        )
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(projected, teacher_map, dim=-1)).mean()
    if kind == "mse":
        return F.mse_loss(projected, teacher_map)
    raise ValueError(f"kind={kind!r} is not known; use one of {HINT_LOSSES}.")
