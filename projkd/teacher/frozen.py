"""The frozen teacher: a module used as it is, or a frozen copy of it.

The teacher is read-only during distillation: it runs without gradients, in
eval mode (its BatchNorm statistics never move), and is never handed to the
optimizer. The user's teacher object must come out of ``fit`` exactly as it
went in: weights, buffers, ``training`` flag, ``requires_grad`` flags, device.
A teacher given as an estimator (a skorch net) is fitted here, on the
training data of the distiller's fit alone.
"""

from __future__ import annotations

import copy
import threading
import weakref
from itertools import chain
from typing import Any

import torch
from torch import nn

from ..errors import InputTypeError

__all__ = [
    "fit_teacher_estimator",
    "freeze_teacher",
    "is_frozen_on",
    "is_teacher_estimator",
]


def is_frozen_on(teacher: nn.Module, device: str | torch.device | None) -> bool:
    """Whether ``teacher`` can be used as is: all in eval mode, all on ``device``.

    ``device=None`` accepts any device (skorch's "do not move" setting).
    """
    if any(module.training for module in teacher.modules()):
        return False
    if device is None:
        return True
    target = torch.device(device)
    tensors = chain(teacher.parameters(), teacher.buffers())
    return all(_same_device(t.device, target) for t in tensors)


def freeze_teacher(teacher: nn.Module, device: str | torch.device | None) -> nn.Module:
    """Return a module that runs ``teacher`` frozen on ``device``.

    ``teacher`` itself is returned when it already is in eval mode on
    ``device`` (sharing costs no memory, and nothing will modify it);
    otherwise a deep copy, switched to eval mode, with gradients off, moved to
    ``device``. The user's object is never modified.

    Parameters
    ----------
    teacher : torch.nn.Module
    device : str, torch.device or None
        ``None`` leaves the teacher where it is.

    Returns
    -------
    frozen : torch.nn.Module
    """
    if not isinstance(teacher, nn.Module):
        raise InputTypeError(
            f"teacher must be a torch.nn.Module, got {type(teacher).__name__}."
        )
    if is_frozen_on(teacher, device):
        return teacher
    frozen = copy.deepcopy(teacher).eval().requires_grad_(False)
    return frozen if device is None else frozen.to(device)


def _same_device(actual: torch.device, target: torch.device) -> bool:
    if actual.type != target.type:
        return False
    return target.index is None or actual.index == target.index


def is_teacher_estimator(teacher: Any) -> bool:
    """Whether ``teacher`` is a scikit-learn-style estimator wrapping a torch
    module (e.g. a skorch net), rather than a module."""
    return not isinstance(teacher, nn.Module) and callable(
        getattr(teacher, "fit", None)
    )


def _is_fitted(estimator: Any) -> bool:
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(estimator)
    except Exception:  # NotFittedError, or an estimator without fitted state
        return False
    return isinstance(getattr(estimator, "module_", None), nn.Module)


_FITTED: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
_FITTED_LOCK = threading.Lock()


def fit_teacher_estimator(
    teacher: Any, X: Any, y: Any, *, params: dict[str, Any] | None = None
) -> Any:
    """The fitted teacher estimator for this training data.

    A fitted estimator (one with a ``module_``) is used as it is. An unfitted
    one is cloned, given ``params``, and fitted on ``(X, y)`` -- the training
    data of the distiller's fit alone, so that in cross-validation no teacher
    has seen its fold's test data. Fitted clones are remembered per teacher
    object and training data, so the candidates of a search that share a fold
    share its teacher. ``teacher`` itself is never modified.

    Parameters
    ----------
    teacher : estimator
        E.g. an unfitted :class:`skorch.NeuralNetClassifier`.
    X, y
        Training data; ``y`` holds class indices (output ``i`` is class ``i``).
    params : dict or None, default=None
        Parameters set on the clone (the distiller's ``teacher__*``).

    Returns
    -------
    fitted : estimator
        With the trained network in ``fitted.module_``.
    """
    import joblib
    from sklearn.base import clone

    if _is_fitted(teacher):
        return teacher
    estimator = clone(teacher).set_params(**(params or {}))
    key = joblib.hash((estimator.get_params(deep=False), X, y, torch.initial_seed()))
    with _FITTED_LOCK:
        fitted = _FITTED.setdefault(teacher, {})
        if key in fitted:
            return fitted[key]
    estimator.fit(X, y)
    if not isinstance(getattr(estimator, "module_", None), nn.Module):
        raise InputTypeError(
            f"The teacher estimator {type(teacher).__name__} has no torch module "
            "in module_ after fit; pass a torch.nn.Module or a skorch net."
        )
    with _FITTED_LOCK:
        _FITTED.setdefault(teacher, {})[key] = estimator
    return estimator
