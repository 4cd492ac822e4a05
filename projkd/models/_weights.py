"""Read weights from the checkpoint files people publish, safely.

:func:`read_state_dict` accepts the layouts in use for CIFAR-100 and
ImageNet teachers: a plain ``state_dict``; a training checkpoint with the
weights under ``"model"`` (RepDistiller, PEFD and mdistiller save
``{"epoch", "model", "accuracy", "optimizer"}``, and RepDistiller's last
checkpoint adds its ``argparse`` options), ``"state_dict"`` or ``"net"``;
keys prefixed by ``module.`` (``DataParallel``/DDP) or ``_orig_mod.``
(``torch.compile``). Files are always read with
``torch.load(..., weights_only=True)``: a file that pickles code is refused
before any of it runs. A file that cannot be read is named with what is
wrong with it (:func:`check_weights_file`): missing, empty, truncated, not a
PyTorch checkpoint at all (an HTML page saved by a failed download), or
carrying pickled code.
"""

from __future__ import annotations

import argparse
import pickle
import pickletools
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError, MissingFileError, UserError

__all__ = [
    "UnsafeWeightsError",
    "WeightsFileError",
    "check_weights_file",
    "load_checkpoint",
    "load_weights",
    "read_state_dict",
]

#: Keys under which training scripts store the weights, in the order tried.
CHECKPOINT_KEYS = ("model", "state_dict", "net", "model_state_dict")
_PREFIXES = ("module.", "_orig_mod.")
_SHOWN = 8
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6
_PICKLE_MAGIC = b"\x80"  # the legacy format: a pickle, protocol 2 or later
_AGAIN = "download or save it again"


class WeightsFileError(InputError):
    """A weights file that is no readable PyTorch checkpoint: empty,
    truncated, or something else altogether (an HTML page, random bytes).
    A ``ValueError``; the message names the file and what is wrong with it."""


class UnsafeWeightsError(UserError, pickle.UnpicklingError):
    """A weights file that carries pickled objects other than tensors and
    plain containers, which could run code: refused, none of it ran."""


def check_weights_file(path: str | Path) -> None:
    """Refuse a file that cannot be a PyTorch checkpoint, without loading it.

    Reads the file's first bytes and, for a zip archive (``torch.save``'s
    format), its directory at the end; a file that passes may still be
    refused by :func:`load_checkpoint`.

    Parameters
    ----------
    path : str or Path

    Raises
    ------
    MissingFileError
        A ``FileNotFoundError``, if there is no file at ``path``.
    WeightsFileError
        A ``ValueError``, if the file is empty, truncated (a zip archive
        without its end), or not a checkpoint (no zip archive, no pickle):
        an HTML page saved as ``.pth`` by a failed download, random bytes.

    Examples
    --------
    >>> import tempfile
    >>> path = tempfile.mkdtemp() + "/resnet8.pth"
    >>> _ = open(path, "w").write("<!DOCTYPE html><html>404</html>")
    >>> try:
    ...     check_weights_file(path)
    ... except WeightsFileError as error:
    ...     print(str(error).split(":")[1].split(" (")[0].strip())
    it is an HTML page, not a PyTorch checkpoint
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"No checkpoint file at {str(path)!r}.")
    size = path.stat().st_size
    if size == 0:
        raise WeightsFileError(
            f"Cannot read {str(path)!r}: it is empty (0 bytes), as a download or "
            f"a save that did not finish leaves it; {_AGAIN}."
        )
    with path.open("rb") as file:
        head = file.read(64)
    if head.startswith(_ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            raise WeightsFileError(
                f"Cannot read {str(path)!r}: it is truncated ({size} bytes of a "
                f"zip archive, torch.save's format, without its end); {_AGAIN}."
            )
        return
    if head.startswith(_PICKLE_MAGIC):  # torch.save's legacy format
        return
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<")):
        what = (
            "an HTML page, not a PyTorch checkpoint (a failed download saves the "
            "server's page under the file's name)"
        )
    else:
        what = (
            f"not a PyTorch checkpoint: it starts with {head[:8]!r}, neither a zip "
            "archive (torch.save's format) nor a pickle (its legacy format)"
        )
    raise WeightsFileError(f"Cannot read {str(path)!r}: it is {what}; {_AGAIN}.")


def _unpickling_reason(error: Exception) -> str:
    """The line of torch's weights-only refusal that says why, without its
    advice to pass ``weights_only=False`` (the one thing not to do)."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the")
    lines = [line.strip() for line in str(error).splitlines()]
    kept = [line for line in lines if line and not line.startswith(boilerplate)]
    return " ".join(kept) or type(error).__name__


def _names_globals(path: Path | str) -> bool:
    """Whether the (legacy, not zipped) pickle in ``path`` names a global --
    a class or function it would call -- read with :mod:`pickletools`, which
    decodes opcodes and runs nothing. torch's weights-only unpickler stops at
    some opcodes (e.g. protocol 4's FRAME) before it sees such a name."""
    names = False
    try:
        with open(path, "rb") as file:
            for opcode, _, _ in pickletools.genops(file):
                names |= opcode.name in ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ")
    except Exception:  # not a whole pickle (truncated, corrupted): broken
        return False
    return names


def load_checkpoint(path: str | Path, *, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, with errors that say what is
    wrong with the file.

    Parameters
    ----------
    path : str or Path
    map_location : str, torch.device or callable, default="cpu"

    Returns
    -------
    obj : object
        What the file holds (tensors and plain containers only).

    Raises
    ------
    MissingFileError, WeightsFileError
        See :func:`check_weights_file`; ``WeightsFileError`` also for a file
        whose contents torch cannot read (truncated inside, corrupted).
    UnsafeWeightsError
        A ``pickle.UnpicklingError``, if the file carries pickled code: it is
        refused, and none of it runs.
    """
    check_weights_file(path)
    try:
        # RepDistiller's final checkpoint stores its argparse options ("opt"),
        # plain data that the weights-only unpickler may build safely.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        reason = _unpickling_reason(error)
        if "GLOBAL" not in reason and not _names_globals(path):
            # no code: the pickle itself is broken
            raise WeightsFileError(
                f"Cannot read {str(path)!r}: it is not a PyTorch checkpoint (its "
                f"pickle cannot be read: {reason}); {_AGAIN}."
            ) from None
        raise UnsafeWeightsError(
            f"Refused to load {str(path)!r}: it holds pickled objects other than "
            "tensors and plain containers, which could run code, so it was read "
            "with weights_only=True and rejected (nothing in it ran): "
            f"{reason} Re-save only the weights: "
            "torch.save(model.state_dict(), path)."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as error:
        raise WeightsFileError(
            f"Cannot read {str(path)!r}: it is truncated or corrupted ({error}); "
            f"{_AGAIN}."
        ) from None


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
    MissingFileError
        A ``FileNotFoundError``, if ``path`` does not exist.
    WeightsFileError
        A ``ValueError``, if the file is empty, truncated or no PyTorch
        checkpoint (see :func:`check_weights_file`).
    UnsafeWeightsError
        A ``pickle.UnpicklingError``, if the file carries pickled code
        (refused by ``weights_only=True``; none of it runs).
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
    obj = load_checkpoint(path, map_location=map_location)
    if _is_state_dict(obj):
        return _strip_prefixes(dict(obj))
    if isinstance(obj, Mapping):
        for key in CHECKPOINT_KEYS:
            if _is_state_dict(obj.get(key)):
                return _strip_prefixes(dict(obj[key]))
        found = ", ".join(map(repr, list(obj)[:_SHOWN]))
        raise InputError(
            f"{str(path)!r} holds a dict with keys {found} but no state_dict under "
            f"any of {', '.join(map(repr, CHECKPOINT_KEYS))}; save the weights as "
            "torch.save(model.state_dict(), path)."
        )
    raise InputError(
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
        raise InputError(
            f"The weights in {str(path)!r} do not fit {name}: "
            + "; ".join(parts)
            + "."
            + hint
        )
    model.load_state_dict(state, strict=True)
    return model
