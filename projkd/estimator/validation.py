"""Checks run at the start of ``fit`` and prediction, before any training."""

from __future__ import annotations

import math
import os
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from scipy import sparse
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    InvalidParameterError,
    Options,
    StrOptions,
    validate_parameter_constraints,
)
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d
from skorch.utils import data_from_dataset, is_dataset
from torch import nn

from ..errors import InputError, InputTypeError, ParameterError
from ..features import first_inputs
from ..losses import FEATURE_LOSSES, HINT_LOSSES, LOGIT_LOSSES
from ..projectors import PROJECTORS
from ..training.precision import check_supported

__all__ = [
    "DISTILLER_CONSTRAINTS",
    "check_compile_params",
    "check_fast_settings",
    "check_fit_data",
    "check_hint_layers",
    "check_input",
    "check_input_shape",
    "check_params",
    "check_target",
    "dataset_labels",
]


_WEIGHT = [Interval(Real, 0, None, closed="left")]

#: The constraints of :class:`~projkd.ProjectorDistiller`'s own parameters,
#: in scikit-learn's vocabulary; the estimator declares them as its
#: ``_parameter_constraints`` class attribute, which subclasses extend.
DISTILLER_CONSTRAINTS: dict[str, list[Any]] = {
    "teacher": [nn.Module, HasMethods(["fit"])],
    "student": [nn.Module, type, callable],
    "n_projectors": [Interval(Integral, 0, None, closed="left")],
    "projector": [StrOptions(set(PROJECTORS)), callable],
    "feature_weight": _WEIGHT,
    "feature_loss": [StrOptions(set(FEATURE_LOSSES)), callable],
    "kd_weight": _WEIGHT,
    "ce_weight": _WEIGHT,
    "temperature": [Interval(Real, 0, None, closed="neither")],
    "logit_loss": [StrOptions(set(LOGIT_LOSSES)), callable],
    "logit_projector": ["boolean"],
    "logit_projector_init": [StrOptions({"identity", "default"})],
    "teacher_layer": [str, None],
    "student_layer": [str, None],
    "hint_layers": [list, tuple, None],
    "hint_weight": _WEIGHT,
    "hint_loss": [StrOptions(set(HINT_LOSSES))],
    "train_transform": [callable, None],
    "cache_teacher": [StrOptions({"auto"}), "boolean"],
    "nonfinite_loss": [StrOptions({"raise", "skip"})],
    "memory": [None, str, os.PathLike, HasMethods(["cache"])],
    "random_state": ["random_state"],
    "mixed_precision": [StrOptions({"bf16", "fp16"}), None],
    "channels_last": ["boolean"],
    "data_device": [str, torch.device],
}

# skorch's batch sizes: a positive int, or -1 for the whole data set in one batch
_BATCH_SIZE = [Interval(Integral, 1, None, closed="left"), Options(Integral, {-1})]
BATCH_SIZE_PARAMS = (
    "batch_size",
    "iterator_train__batch_size",
    "iterator_valid__batch_size",
)
LOSS_WEIGHTS = ("ce_weight", "kd_weight", "feature_weight")


def check_params(estimator: Any) -> None:
    """Validate an estimator's parameters against its ``_parameter_constraints``.

    The constraints are a class attribute, in scikit-learn's vocabulary
    (``Interval``, ``StrOptions``), that subclasses extend.

    The batch sizes (``batch_size``, ``iterator_train__batch_size``,
    ``iterator_valid__batch_size``) must be positive integers or -1 (one batch
    of everything), and at least one loss weight must be positive.

    Raises
    ------
    sklearn.utils._param_validation.InvalidParameterError
        A ``ValueError`` (and ``TypeError``) naming the parameter, the accepted
        values and the value received.
    ValueError
        If ``ce_weight``, ``kd_weight`` and ``feature_weight`` are all zero.
    """
    caller = type(estimator).__name__
    constraints = estimator._parameter_constraints
    params = {name: getattr(estimator, name) for name in constraints}
    try:
        validate_parameter_constraints(constraints, params, caller_name=caller)
    except InvalidParameterError as error:
        raise ParameterError(str(error)) from None
    # the iterator_* sizes exist only when set; each overrides batch_size
    sizes = {
        name: getattr(estimator, name)
        for name in BATCH_SIZE_PARAMS
        if hasattr(estimator, name)
    }
    try:
        validate_parameter_constraints(
            dict.fromkeys(sizes, _BATCH_SIZE), sizes, caller_name=caller
        )
    except InvalidParameterError as error:
        raise ParameterError(str(error)) from None
    check_compile_params(estimator)
    check_hint_layers(params.get("hint_layers"))
    weights = LOSS_WEIGHTS + (("hint_weight",) if params.get("hint_layers") else ())
    if all(params.get(name) == 0 for name in weights):
        raise InputError(
            "ce_weight, kd_weight and feature_weight are all 0: the loss is zero and "
            "there is nothing to learn from. Give at least one of them a positive "
            "weight (e.g. ce_weight=1.0)."
        )


def check_hint_layers(hint_layers: Any) -> None:
    """Refuse ``hint_layers`` that are not pairs of module names.

    Raises
    ------
    InputError
        Naming the entry that is not a ``(student_layer, teacher_layer)``
        pair of strings.
    """
    for index, pair in enumerate(hint_layers or ()):
        if not (
            isinstance(pair, tuple | list)
            and len(pair) == 2
            and all(isinstance(name, str) for name in pair)
        ):
            raise InputError(
                f"hint_layers[{index}] = {pair!r} is not a (student_layer, "
                "teacher_layer) pair of module names, e.g. hint_layers="
                "[('layer2', 'layer2'), ('layer3', 'layer3')]."
            )


def check_input(X: Any, *, step: str = "fit") -> Any:
    """Return ``X`` as float32 (array or tensor), or a Dataset unchanged.

    The user's array is never modified: a conversion makes a copy, and an
    array that already is float32 is passed through as is.

    Parameters
    ----------
    X : array-like, tensor or Dataset
    step : str, default="fit"
        What ``X`` is for (``"fit"``, ``"predict"``), named in the errors.

    Raises
    ------
    TypeError
        If ``X`` is sparse or not numeric.
    ValueError
        If ``X`` is complex, empty, has fewer than 2 dimensions, or holds NaN
        or infinity.
    """
    if is_dataset(X):
        return X
    if sparse.issparse(X):
        raise InputTypeError(
            "Sparse input is not supported: ProjectorDistiller feeds dense tensors "
            "to its networks. Convert it with X.toarray()."
        )
    if isinstance(X, torch.Tensor):
        if X.is_complex():
            raise InputError("Complex data not supported; X must hold real numbers.")
        if X.dtype == torch.bool:
            raise InputTypeError("X must be numeric, got a tensor of torch.bool.")
        X = X if X.dtype == torch.float32 else X.float()
        finite = bool(torch.isfinite(X).all())
    else:
        X = np.asarray(X)
        if X.dtype.kind == "c":
            raise InputError("Complex data not supported; X must hold real numbers.")
        if X.dtype.kind not in "biufO":
            raise InputTypeError(
                f"X must be numeric (float or integer), got an array of dtype "
                f"{X.dtype}; convert it with np.asarray(X, dtype=np.float32)."
            )
        try:
            X = X.astype(np.float32, copy=False)
        except (TypeError, ValueError) as error:  # an object array of non-numbers
            raise InputTypeError(f"X must be numeric: {error}") from error
        finite = bool(np.isfinite(X).all())
    if X.ndim < 2:
        raise InputError(
            f"Expected a 2D or higher array, got {X.ndim}D array of shape "
            f"{tuple(X.shape)} instead. Reshape your data either using "
            "array.reshape(-1, 1) if your data has a single feature or "
            "array.reshape(1, -1) if it contains a single sample."
        )
    if X.shape[0] == 0:
        raise InputError(
            f"Found array with 0 sample(s) (shape={tuple(X.shape)}) while a minimum "
            "of 1 is required."
        )
    if math.prod(X.shape[1:]) == 0:
        raise InputError(
            f"Found array with 0 feature(s) (shape={tuple(X.shape)}) while a minimum "
            "of 1 is required."
        )
    if not finite:
        raise InputError(
            f"X contains NaN or infinity; clean or impute it before {step}."
        )
    return X


def check_input_shape(X: Any, expected: tuple[int, ...] | None, name: str) -> None:
    """Raise if the samples of ``X`` differ in shape from those seen by ``fit``."""
    if expected is None or is_dataset(X) or tuple(X.shape[1:]) == expected:
        return
    if X.ndim == 2 and len(expected) == 1:
        raise InputError(
            f"X has {X.shape[1]} features, but {name} is expecting {expected[0]} "
            "features as input."
        )
    raise InputError(
        f"X has samples of shape {tuple(X.shape[1:])}, but {name} was fitted on "
        f"samples of shape {expected}."
    )


def check_target(y: Any, n_samples: int | None) -> np.ndarray:
    """Return ``y`` as a 1-D numpy array after checking it against ``X``.

    Raises
    ------
    ValueError
        If ``y`` is not 1-D (a column vector is raveled with a
        ``DataConversionWarning``), its length differs from ``X``'s, it holds
        NaN, or it is continuous rather than class labels.
    """
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = column_or_1d(y, warn=True)
    if y.ndim != 1:
        raise InputError(f"y must be 1-D (one label per sample), got shape {y.shape}.")
    if n_samples is not None and len(y) != n_samples:
        raise InputError(
            f"X has {n_samples} samples but y has {len(y)} labels; they must match."
        )
    if y.dtype.kind == "f" and np.isnan(y).any():
        raise InputError("y contains NaN; every sample needs a label.")
    try:
        check_classification_targets(y)
    except ValueError as error:  # scikit-learn's message, marked as projkd's
        raise InputError(str(error)) from None
    return y


def check_fit_data(estimator: Any, X: Any, y: Any) -> tuple[Any, Any]:
    """The data of a fit, checked (:func:`check_input`, :func:`check_target`),
    and refused where the estimator's parameters cannot take them.

    Raises
    ------
    ValueError
        If ``y`` is missing for array input, or ``cache_teacher=True`` is
        given with a ``Dataset`` or a ``train_transform``.
    """
    X = check_input(X)
    if y is not None:
        y = check_target(y, None if is_dataset(X) else len(X))
    elif not is_dataset(X):
        raise InputError(
            f"{type(estimator).__name__} requires y to be passed, but the target y "
            "is None; pass labels, or a Dataset that yields them."
        )
    else:
        y = dataset_labels(X)
        if y is None and getattr(estimator.train_split, "stratified", False):
            raise InputError(
                f"X is a {type(X).__name__} without labels to read (no `targets` "
                "attribute, no skorch Dataset `y`), and train_split="
                f"{estimator.train_split!r} stratifies by them: pass y (the "
                "dataset's labels), or train_split=ValidSplit(5, stratified=False) "
                "or None."
            )
        if y is not None:
            y = check_target(y, len(X))
    if estimator.cache_teacher not in ("auto", False) and (
        estimator.train_transform is not None or is_dataset(X)
    ):
        raise InputError(
            "cache_teacher=True needs array input and no train_transform: a "
            "random augmentation changes the teacher's output at every step. "
            "Use cache_teacher='auto' or False."
        )
    if estimator.cache_teacher not in ("auto", False) and estimator.has_hints():
        raise InputError(
            "cache_teacher=True with hint_layers: the teacher's hint maps are "
            "computed at each step, not cached. Use cache_teacher='auto' or False."
        )
    return X, y


def dataset_labels(dataset: Any) -> Any:
    """The labels a dataset carries, or None: its ``targets`` (torchvision's
    data sets: ``ImageFolder``, ``MNIST``, ``CIFAR100``), or the ``y`` of a
    skorch ``Dataset`` (or a ``Subset`` of one)."""
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return targets
    try:
        _, y = data_from_dataset(dataset)
    except AttributeError:
        return None
    return y


def check_fast_settings(estimator: Any, X: Any, device: Any) -> None:
    """Refuse speed settings that cannot work on ``device``, before training.

    Raises
    ------
    ValueError
        For a ``mixed_precision`` the device cannot autocast, a
        ``data_device`` that is no device, or ``channels_last=True`` with
        input that is not ``(N, C, H, W)`` images.
    """
    try:
        check_supported(device, estimator.mixed_precision)
    except ValueError as error:  # precision.py cannot import this module's errors
        raise InputError(str(error)) from None
    if estimator.data_device != "auto":
        try:
            torch.device(estimator.data_device)
        except (RuntimeError, ValueError) as error:
            raise InputError(
                f"data_device={estimator.data_device!r} is not a device; use "
                "'auto', 'cpu', 'cuda' or 'cuda:<index>'."
            ) from error
    if estimator.channels_last:
        ndim = first_inputs(X, n=1).ndim if is_dataset(X) else X.ndim
        if ndim != 4:
            raise InputError(
                "channels_last=True needs image batches of shape (N, C, H, W), "
                f"but the inputs have {ndim} dimensions. Use channels_last=False "
                "for other input."
            )


def check_compile_params(estimator: Any) -> None:
    """Refuse ``compile__*`` parameters that :func:`torch.compile` rejects.

    With ``compile=True`` skorch hands the ``compile__*`` parameters to
    :func:`torch.compile` only while it builds the networks, where a bad
    ``compile__mode`` surfaces as torch's ``RuntimeError``. They are tried
    here on a trivial function instead (torch checks the mode, the options
    and the keywords when ``torch.compile`` is called; nothing is compiled),
    so that the valid choices are torch's own, whatever its version.

    Raises
    ------
    InputError
        Naming the parameters given and torch's reason, which lists the valid
        modes for an unknown ``compile__mode``.
    """
    if not getattr(estimator, "compile", False):
        return
    params = estimator.get_params_for("compile")
    try:
        torch.compile(_identity, **params)
    except (RuntimeError, TypeError, ValueError) as error:
        given = ", ".join(f"compile__{k}={v!r}" for k, v in params.items())
        raise InputError(
            f"{type(estimator).__name__}(compile=True, {given}): torch.compile "
            f"refuses these parameters: {error}. Use one of the choices torch "
            "names, or drop the parameter."
        ) from None


def _identity(x: Any) -> Any:
    return x
