"""The frozen teacher.

The teacher is read-only during distillation: it runs without gradients, in
eval mode (its BatchNorm statistics never move), and is never handed to the
optimizer. The user's teacher object must come out of ``fit`` exactly as it
went in: weights, buffers, ``training`` flag, ``requires_grad`` flags, device.
"""

from __future__ import annotations

import copy
import threading
import weakref
from itertools import chain
from pathlib import Path
from typing import Any

import torch
from skorch import NeuralNetClassifier
from torch import nn

from .features import logits_of

__all__ = [
    "fit_teacher_estimator",
    "freeze_teacher",
    "is_teacher_estimator",
    "is_frozen_on",
    "load_teacher",
    "save_teacher",
    "train_teacher",
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
        raise TypeError(
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


def train_teacher(
    model: nn.Module,
    X: Any,
    y: Any,
    *,
    random_state: int | None = None,
    **net_params: Any,
) -> nn.Module:
    """Train a teacher with skorch on class indices and return it in eval mode.

    A thin wrapper over :class:`skorch.NeuralNetClassifier` with a
    cross-entropy criterion: any skorch parameter (``max_epochs``, ``lr``,
    ``optimizer``, ``optimizer__momentum``, ``callbacks``, ``device``, ...)
    can be passed. ``model`` is trained in place.

    Parameters
    ----------
    model : torch.nn.Module
        E.g. ``projkd.models.get_model("resnet32x4")``.
    X : array-like, tensor or Dataset
    y : array-like of int or None
        Class indices 0..C-1 (the teacher's output ``i`` means class ``i``).
    random_state : int or None, default=None
        Seeds torch for the duration of training.
    **net_params
        skorch parameters; ``train_split=None``, ``verbose=0`` and
        ``iterator_train__shuffle=True`` by default.

    Returns
    -------
    teacher : torch.nn.Module
        ``model``, trained, in eval mode.

    Examples
    --------
    >>> from projkd.data import load_digits
    >>> from projkd.models import DigitsCNN
    >>> X, y = load_digits()
    >>> teacher = train_teacher(DigitsCNN(width=4), X, y, max_epochs=1)
    >>> teacher.training
    False
    """
    from ._random import seeded

    params: dict[str, Any] = {
        "train_split": None,
        "verbose": 0,
        "iterator_train__shuffle": True,  # skorch does not shuffle by default
        **net_params,
    }
    params.setdefault("criterion", nn.CrossEntropyLoss)
    net = _LogitsNet(model, **params)
    with seeded(random_state, params.get("device", "cpu")):
        net.fit(X, y)
    return net.module_.eval()


class _LogitsNet(NeuralNetClassifier):
    """skorch's classifier on the logits of any output :func:`logits_of` reads
    (a Hugging Face model returns an ``ImageClassifierOutput``)."""

    def infer(self, x: Any, **fit_params: Any) -> torch.Tensor:
        return logits_of(super().infer(x, **fit_params), network="teacher")


def save_teacher(model: nn.Module, path: str | Path) -> None:
    """Save a teacher's weights as a plain ``state_dict`` (no pickled code).

    The file loads back with :func:`load_teacher` or
    ``projkd.models.get_model(name, weights=path)``.
    """
    torch.save(model.state_dict(), path)


def load_teacher(
    model: nn.Module, path: str | Path, *, device: Any = "cpu"
) -> nn.Module:
    """Load a teacher checkpoint into ``model``, in eval mode.

    Reads the files of :func:`save_teacher` and the checkpoints published
    with the CIFAR-100 benchmark: a plain ``state_dict``, or a training
    checkpoint with the weights under ``"model"`` (RepDistiller, PEFD and
    mdistiller save ``{"epoch", "model", "accuracy", "optimizer"}``, from
    CUDA), ``"state_dict"`` or ``"net"``; a ``module.`` prefix
    (DataParallel/DDP) is removed. Loading goes through
    ``torch.load(..., weights_only=True, map_location=device)``: a file that
    carries pickled code is refused, and its code never runs.

    Parameters
    ----------
    model : torch.nn.Module
        The architecture, e.g. ``get_model("resnet32x4")``.
    path : str or Path
    device : str or torch.device, default="cpu"

    Returns
    -------
    teacher : torch.nn.Module
        ``model`` with the weights, on ``device``, in eval mode.

    Raises
    ------
    pickle.UnpicklingError
        If the file carries code (which never runs).
    ValueError
        If the file holds no ``state_dict``, or its keys or shapes do not fit
        ``model`` (the message lists the missing and unexpected keys).

    Examples
    --------
    >>> import tempfile
    >>> from projkd.models import get_model
    >>> path = tempfile.mkdtemp() + "/teacher.pt"
    >>> save_teacher(get_model("resnet8"), path)
    >>> load_teacher(get_model("resnet8"), path).training
    False
    """
    from .models import load_weights

    load_weights(model, path, map_location=device)
    return model.to(device).eval()


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
        raise TypeError(
            f"The teacher estimator {type(teacher).__name__} has no torch module "
            "in module_ after fit; pass a torch.nn.Module or a skorch net."
        )
    with _FITTED_LOCK:
        _FITTED.setdefault(teacher, {})[key] = estimator
    return estimator
