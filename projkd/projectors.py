"""Projectors: small networks mapping student features onto the teacher's.

Chen et al. (2022) train an *ensemble* of ``k`` independently initialised
projectors ``p_i(s) = ReLU(W_i s + b_i)`` and align their mean with the
teacher's features. ``k = 0`` means no projector: the student's features are
compared with the teacher's directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import InputError
from .losses.hints import as_positions

__all__ = [
    "HintProjectors",
    "PROJECTORS",
    "FusedLinearEnsemble",
    "ProjectorEnsemble",
    "linear_projector",
    "logit_projector",
    "mlp_projector",
]

ProjectorFactory = Callable[[int, int], nn.Module]
ProjectorSpec = str | ProjectorFactory


def linear_projector(in_features: int, out_features: int) -> nn.Module:
    """``Linear(in, out) + ReLU``, the projector of the paper."""
    return nn.Sequential(nn.Linear(in_features, out_features), nn.ReLU())


def mlp_projector(in_features: int, out_features: int) -> nn.Module:
    """``Linear - BatchNorm - ReLU - Linear``, a two-layer projector."""
    return nn.Sequential(
        nn.Linear(in_features, out_features),
        nn.BatchNorm1d(out_features),
        nn.ReLU(),
        nn.Linear(out_features, out_features),
    )


PROJECTORS: dict[str, ProjectorFactory] = {
    "linear": linear_projector,
    "mlp": mlp_projector,
}


def get_projector_factory(projector: ProjectorSpec) -> ProjectorFactory:
    """Return the factory for a projector name or callable.

    Raises
    ------
    ValueError
        If ``projector`` is neither a known name nor callable.
    """
    if callable(projector):
        return projector
    if projector in PROJECTORS:
        return PROJECTORS[projector]
    raise ValueError(
        f"projector={projector!r} is not known; use one of {sorted(PROJECTORS)} "
        "or a callable (in_features, out_features) -> nn.Module."
    )


class FusedLinearEnsemble(nn.Module):
    """``k`` projectors ``ReLU(W_i s + b_i)`` averaged, computed as one GEMM.

    The weights of the ``k`` projectors are stacked into one
    ``(k * out_features, in_features)`` matrix, so the ensemble costs one
    matrix multiplication (one kernel) instead of ``k`` small ones; the ReLU
    is applied to each projector's output before averaging, so this is the
    same function as ``k`` separate ``Linear + ReLU`` (up to float rounding
    of the mean). Each projector is initialised as its own ``nn.Linear``, in
    order, so a seeded ensemble starts from exactly the weights of the
    unfused one.

    Parameters
    ----------
    in_features, out_features : int
    n_projectors : int
        ``k >= 1``.

    Attributes
    ----------
    weight : torch.nn.Parameter of shape (k, out_features, in_features)
    bias : torch.nn.Parameter of shape (k, out_features)

    Examples
    --------
    >>> import torch
    >>> fused = FusedLinearEnsemble(4, 6, n_projectors=3)
    >>> tuple(fused(torch.randn(2, 4)).shape), tuple(fused.weight.shape)
    ((2, 6), (3, 6, 4))
    """

    def __init__(self, in_features: int, out_features: int, n_projectors: int) -> None:
        super().__init__()
        if n_projectors < 1:
            raise ValueError(f"n_projectors must be >= 1, got {n_projectors}.")
        layers = [nn.Linear(in_features, out_features) for _ in range(n_projectors)]
        self.weight = nn.Parameter(torch.stack([layer.weight.data for layer in layers]))
        self.bias = nn.Parameter(torch.stack([layer.bias.data for layer in layers]))

    def forward(self, features: Tensor) -> Tensor:
        k, d_out, d_in = self.weight.shape
        weight = self.weight.reshape(k * d_out, d_in)
        out = F.linear(features, weight, self.bias.ravel())
        return torch.relu(out.unflatten(-1, (k, d_out))).mean(dim=-2)

    def unfused(self) -> list[nn.Module]:
        """Copies of the ``k`` projectors as separate ``Linear + ReLU`` modules."""
        modules: list[nn.Module] = []
        for weight, bias in zip(self.weight, self.bias, strict=True):
            layer = nn.Linear(weight.shape[1], weight.shape[0])
            with torch.no_grad():
                layer.weight.copy_(weight)
                layer.bias.copy_(bias)
            modules.append(nn.Sequential(layer, nn.ReLU()))
        return modules


class ProjectorEnsemble(nn.Module):
    """The mean of ``n_projectors`` independently initialised projectors.

    Parameters
    ----------
    in_features : int
        Width of the student's features.
    out_features : int
        Width of the teacher's features.
    n_projectors : int, default=3
        Size of the ensemble; 0 is the identity (then ``in_features`` must
        equal ``out_features``).
    projector : {"linear", "mlp"} or callable, default="linear"
        The projector architecture, or a callable
        ``(in_features, out_features) -> nn.Module``.
    fuse : bool, default=True
        Compute ``"linear"`` projectors as one batched matrix multiplication
        (:class:`FusedLinearEnsemble`, held as ``fused``); otherwise, and for
        other projectors, each one is a module of ``projectors``.

    Attributes
    ----------
    projectors : torch.nn.ModuleList
        The separate projectors (empty when fused).
    fused : FusedLinearEnsemble or None
        The fused linear projectors.

    References
    ----------
    Chen, Wang, Liu, Xu, de Hoog, Kusy, Huang. "Improved Feature Distillation
    via Projector Ensemble", NeurIPS 2022, arXiv:2210.15274.

    Examples
    --------
    >>> import torch
    >>> ensemble = ProjectorEnsemble(16, 32, n_projectors=3)
    >>> tuple(ensemble(torch.randn(4, 16)).shape), len(ensemble)
    ((4, 32), 3)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        n_projectors: int = 3,
        projector: ProjectorSpec = "linear",
        fuse: bool = True,
    ) -> None:
        super().__init__()
        if n_projectors == 0 and in_features != out_features:
            raise ValueError(
                "n_projectors=0 compares the student's features with the teacher's "
                f"directly, but the student's features have width {in_features} and "
                f"the teacher's {out_features}. Use n_projectors >= 1, or a student "
                "whose feature width equals the teacher's."
            )
        factory = get_projector_factory(projector)
        self.in_features = in_features
        self.out_features = out_features
        self.n_projectors = n_projectors
        self.fused: FusedLinearEnsemble | None = None
        self.projectors = nn.ModuleList()
        if fuse and projector == "linear" and n_projectors > 0:
            self.fused = FusedLinearEnsemble(in_features, out_features, n_projectors)
        else:
            self.projectors.extend(
                factory(in_features, out_features) for _ in range(n_projectors)
            )

    def __len__(self) -> int:
        return self.n_projectors

    def forward(self, features: Tensor) -> Tensor:
        if self.fused is not None:
            return self.fused(features)
        if len(self.projectors) == 0:
            return features
        total = sum(projector(features) for projector in self.projectors)
        return total / len(self.projectors)


class HintProjectors(nn.ModuleList):
    """One :class:`ProjectorEnsemble` per hint pair, acting on each
    position's channels (a 1x1 convolution for a spatial map).

    Called as ``projectors(maps, teacher_maps)``: the student's hint maps
    through their ensembles and the teacher's maps, both ``(N, P, C_t)`` at
    the teacher's positions (:func:`~projkd.losses.as_positions`); ``((),
    ())`` without pairs. A module with a ``forward``, so that data-parallel
    training runs it inside DDP's forward, as every trained module.

    Parameters
    ----------
    widths : sequence of (int, int)
        ``(C_s, C_t)`` of each pair.
    n_projectors : int, default=3

    Examples
    --------
    >>> import torch
    >>> projectors = HintProjectors([(4, 6)], n_projectors=2)
    >>> maps, teacher_maps = projectors([torch.randn(2, 4, 8, 8)],
    ...                                 [torch.randn(2, 6, 4, 4)])
    >>> tuple(maps[0].shape), tuple(teacher_maps[0].shape)
    ((2, 16, 6), (2, 16, 6))
    """

    def __init__(
        self, widths: Sequence[tuple[int, int]] = (), n_projectors: int = 3
    ) -> None:
        for index, (c_s, c_t) in enumerate(widths):
            if n_projectors == 0 and c_s != c_t:
                raise InputError(
                    f"n_projectors=0 compares hint pair {index}'s maps directly, "
                    f"but the student's has {c_s} channels and the teacher's "
                    f"{c_t}. Use n_projectors >= 1, or a pair of layers with as "
                    "many channels."
                )
        super().__init__(
            ProjectorEnsemble(c_s, c_t, n_projectors) for c_s, c_t in widths
        )

    def forward(
        self, maps: Sequence[Tensor], teacher_maps: Sequence[Tensor]
    ) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        if not maps or not teacher_maps:
            return (), ()
        pairs = zip(self, maps, teacher_maps, strict=True)
        return (
            tuple(project(as_positions(s, like=t)) for project, s, t in pairs),
            tuple(as_positions(t) for t in teacher_maps),
        )


def logit_projector(n_classes: int, init: str = "identity") -> nn.Module:
    """The ``Linear(C, C)`` on the student's logits used by KD + logit projector.

    Parameters
    ----------
    n_classes : int
        ``C``, the number of classes.
    init : {"identity", "default"}, default="identity"
        ``"identity"`` starts from ``W = I, b = 0``: the KD term first sees the
        raw logits, and the projector can only learn a correction, so
        predictions (which use the raw logits) keep the teacher's class order.
        ``"default"`` keeps PyTorch's random initialisation, as the reference
        code (``Reg(C, C)`` in chenyd7/PEFD) does: KD can then be satisfied in a
        scrambled logit basis, and with a CE weight of 0.1 the raw logits may
        learn much less than with plain KD.

    Returns
    -------
    projector : torch.nn.Linear

    Examples
    --------
    >>> p = logit_projector(3)
    >>> bool((p.weight == torch.eye(3)).all()), bool((p.bias == 0).all())
    (True, True)
    """
    layer = nn.Linear(n_classes, n_classes)
    if init == "identity":
        with torch.no_grad():
            layer.weight.copy_(torch.eye(n_classes))
            layer.bias.zero_()
    elif init != "default":
        raise ValueError(f"init={init!r} is not known; use 'identity' or 'default'.")
    return layer
