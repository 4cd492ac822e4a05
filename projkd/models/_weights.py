"""Read weights from the checkpoint files people publish, safely.

:func:`read_state_dict` accepts the layouts in use for CIFAR-100 and
ImageNet teachers: a plain ``state_dict``; a training checkpoint with the
weights under ``"model"`` (RepDistiller, PEFD and mdistiller save
``{"epoch", "model", "accuracy", "optimizer"}``, and RepDistiller's last
checkpoint adds its ``argparse`` options), ``"state_dict"`` or ``"net"``;
keys prefixed by ``module.`` (``DataParallel``/DDP) or ``_orig_mod.``
(``torch.compile``). Files are always read with
``torch.load(..., weights_only=True)``: a file that pickles code is refused
before any of it runs.
"""

from __future__ import annotations

import argparse
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["load_weights", "read_state_dict"]

#: Keys under which training scripts store the weights, in the order tried.
CHECKPOINT_KEYS = ("model", "state_dict", "net", "model_state_dict")
_PREFIXES = ("module.", "_orig_mod.")
_SHOWN = 8


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if all(key.startswith(prefix) for key in state):
                state = {key[len(prefix) :]: value for key, value in state.items()}
                changed = True
    return state


def read_state_dict(
    path: str | Path, *, map_location: Any = "cpu"
) -> dict[str, torch.Tensor]:
    """The ``state_dict`` inside a checkpoint file, whatever its layout.

    Parameters
    ----------
    path : str or Path
        A file written by ``torch.save``.
    map_location : str, torch.device or callable, default="cpu"
        Where tensors go (a checkpoint saved from CUDA loads on a CPU-only
        machine).

    Returns
    -------
    state_dict : dict of str to torch.Tensor
        With any ``module.``/``_orig_mod.`` prefix removed.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    pickle.UnpicklingError
        If the file carries pickled code (refused by ``weights_only=True``;
        none of it runs).
    ValueError
        If the file holds no recognisable ``state_dict``.

    Examples
    --------
    >>> import tempfile, torch
    >>> from projkd.models import get_model
    >>> net = get_model("resnet8")
    >>> path = tempfile.mkdtemp() + "/ckpt_epoch_240.pth"
    >>> torch.save({"epoch": 240, "model": net.state_dict(), "accuracy": 0.5}, path)
    >>> list(read_state_dict(path))[:2]
    ['conv1.weight', 'bn1.weight']
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {str(path)!r}.")
    try:
        # RepDistiller's final checkpoint stores its argparse options ("opt"),
        # plain data that the weights-only unpickler may build safely.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise pickle.UnpicklingError(
            f"Refused to load {str(path)!r}: it holds pickled objects other than "
            "tensors and plain containers, which could run code, so it was read "
            "with weights_only=True and rejected (nothing in it ran). Re-save "
            "only the weights: torch.save(model.state_dict(), path). Detail: "
            f"{error}"
        ) from error
    if _is_state_dict(obj):
        return _strip_prefixes(dict(obj))
    if isinstance(obj, Mapping):
        for key in CHECKPOINT_KEYS:
            if _is_state_dict(obj.get(key)):
                return _strip_prefixes(dict(obj[key]))
        found = ", ".join(map(repr, list(obj)[:_SHOWN]))
        raise ValueError(
            f"{str(path)!r} holds a dict with keys {found} but no state_dict under "
            f"any of {', '.join(map(repr, CHECKPOINT_KEYS))}; save the weights as "
            "torch.save(model.state_dict(), path)."
        )
    raise ValueError(
        f"{str(path)!r} holds a {type(obj).__name__}, not a state_dict or a "
        "checkpoint dict; save the weights as torch.save(model.state_dict(), path)."
    )


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    more = f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return f"{shown}{more}"


def load_weights(
    model: nn.Module,
    path: str | Path,
    *,
    arch: str | None = None,
    map_location: Any = "cpu",
) -> nn.Module:
    """Load a checkpoint file into ``model`` with ``strict=True``.

    Parameters
    ----------
    model : torch.nn.Module
        The architecture the weights belong to.
    path : str or Path
        Any layout :func:`read_state_dict` reads.
    arch : str or None, default=None
        The architecture's name, for error messages (the class name if
        ``None``).
    map_location : str, torch.device or callable, default="cpu"

    Returns
    -------
    model : torch.nn.Module
        The same object, with the weights loaded.

    Raises
    ------
    ValueError
        If keys are missing or unexpected, or shapes differ: the message
        names them and the architecture.
    """
    state = read_state_dict(path, map_location=map_location)
    name = arch or type(model).__name__
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {_listing(shapes)}")
        hint = (
            " Is it a checkpoint of another architecture, or for another num_classes?"
        )
        raise ValueError(
            f"The weights in {str(path)!r} do not fit {name}: "
            + "; ".join(parts)
            + "."
            + hint
        )
    model.load_state_dict(state, strict=True)
    return model
