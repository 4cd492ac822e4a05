"""Input conversion shared by the metrics."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InputError


def as_numpy(values: Any) -> np.ndarray:
    """A numpy view of an array-like or (CPU copy of a) torch tensor."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def check_features(
    X: Any, Y: Any, *, min_samples: int = 2, check_finite: bool = True
) -> None:
    """Check a pair of feature matrices for CKA.

    Raises
    ------
    ValueError
        If either is not 2-D, their sample counts differ, there are fewer
        than ``min_samples`` samples, or (with ``check_finite``) a value is
        NaN or infinite.
    """
    for name, M in (("X", X), ("Y", Y)):
        if M.ndim != 2:
            raise InputError(
                f"{name} must be 2-D (n_samples, n_features), got shape "
                f"{tuple(M.shape)}."
            )
    if X.shape[0] != Y.shape[0]:
        raise InputError(
            f"X has {X.shape[0]} samples but Y has {Y.shape[0]}; CKA compares "
            "two representations of the same samples."
        )
    if X.shape[0] < min_samples:
        raise InputError(
            f"CKA needs at least {min_samples} samples here, got {X.shape[0]}."
        )
    if check_finite:
        for name, M in (("X", X), ("Y", Y)):
            if isinstance(M, torch.Tensor):
                finite = bool(torch.isfinite(M).all())
            else:
                finite = bool(np.isfinite(M).all())
            if not finite:
                raise_not_finite(name)


def raise_not_finite(name: str) -> None:
    raise InputError(f"{name} contains NaN or infinity.")
