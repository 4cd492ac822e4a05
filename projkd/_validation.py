"""Checks run at the start of ``fit`` and prediction, before any training."""

from __future__ import annotations

import os
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    StrOptions,
    validate_parameter_constraints,
)
from skorch.utils import is_dataset
from torch import nn

from .projectors import PROJECTORS

__all__ = ["PARAMETER_CONSTRAINTS", "check_input", "check_params", "check_target"]

_WEIGHT = [Interval(Real, 0, None, closed="left")]

PARAMETER_CONSTRAINTS: dict[str, list[Any]] = {
    "teacher": [nn.Module],
    "student": [nn.Module, type, callable],
    "n_projectors": [Interval(Integral, 0, None, closed="left")],
    "projector": [StrOptions(set(PROJECTORS)), callable],
    "feature_weight": _WEIGHT,
    "kd_weight": _WEIGHT,
    "ce_weight": _WEIGHT,
    "temperature": [Interval(Real, 0, None, closed="neither")],
    "logit_projector": ["boolean"],
    "teacher_layer": [str, None],
    "student_layer": [str, None],
    "train_transform": [callable, None],
    "cache_teacher": [StrOptions({"auto"}), "boolean"],
    "memory": [None, str, os.PathLike, HasMethods(["cache"])],
    "random_state": ["random_state"],
}


def check_params(estimator: Any) -> None:
    """Validate the distillation parameters in scikit-learn's vocabulary.

    Raises
    ------
    sklearn.utils._param_validation.InvalidParameterError
        A ``ValueError`` (and ``TypeError``) naming the parameter, the accepted
        values and the value received.
    """
    params = {name: getattr(estimator, name) for name in PARAMETER_CONSTRAINTS}
    validate_parameter_constraints(
        PARAMETER_CONSTRAINTS, params, caller_name=type(estimator).__name__
    )


def check_input(X: Any) -> Any:
    """Return ``X`` as float32 (array or tensor), or a Dataset unchanged.

    The user's array is never modified: a conversion makes a copy, and an
    array that already is float32 is passed through as is.

    Raises
    ------
    TypeError
        If ``X`` is not numeric.
    ValueError
        If ``X`` is empty, has fewer than 2 dimensions, or holds NaN or inf.
    """
    if is_dataset(X):
        return X
    if isinstance(X, torch.Tensor):
        if X.is_complex() or X.dtype == torch.bool:
            raise TypeError(f"X must hold real numbers, got a tensor of {X.dtype}.")
        X = X if X.dtype == torch.float32 else X.float()
        finite = bool(torch.isfinite(X).all())
    else:
        X = np.asarray(X)
        if X.dtype.kind not in "biuf":
            raise TypeError(
                f"X must be numeric (float or integer), got an array of dtype "
                f"{X.dtype}; convert it with np.asarray(X, dtype=np.float32)."
            )
        X = X.astype(np.float32, copy=False)
        finite = bool(np.isfinite(X).all())
    if X.ndim < 2:
        raise ValueError(
            f"X must have a batch dimension and at least one feature dimension, "
            f"got shape {tuple(X.shape)}; reshape a single sample with X[None]."
        )
    if X.shape[0] == 0:
        raise ValueError(f"X is empty (shape {tuple(X.shape)}).")
    if not finite:
        raise ValueError("X contains NaN or infinity; clean or impute it before fit.")
    return X


def check_target(y: Any, n_samples: int | None) -> np.ndarray:
    """Return ``y`` as a 1-D numpy array after checking it against ``X``.

    Raises
    ------
    ValueError
        If ``y`` is not 1-D, its length differs from ``X``'s, or it holds NaN.
    """
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (one label per sample), got shape {y.shape}.")
    if n_samples is not None and len(y) != n_samples:
        raise ValueError(
            f"X has {n_samples} samples but y has {len(y)} labels; they must match."
        )
    if y.dtype.kind == "f" and np.isnan(y).any():
        raise ValueError("y contains NaN; every sample needs a label.")
    return y
