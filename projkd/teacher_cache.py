"""Teacher outputs computed once and reused: within a fit, across folds and
candidates of a search, and (with ``memory=``) across processes and runs.

Without training-time augmentation the frozen teacher's output on a sample
never changes, so running it every step of every epoch of every fit is
waste. :func:`cached_teacher_outputs` computes it in large no-grad batches
and remembers it *per sample* (keyed by the sample's bytes) for each teacher
object, so the folds of a cross-validation, whose training sets overlap, run
the teacher on each sample about once in all. The in-process cache lives as
long as the teacher object does; :func:`clear_teacher_cache` empties it.

Outputs are stored at the precision of the training step: with
``mixed_precision="bf16"`` or ``"fp16"`` the teacher runs under autocast and
its logits and features are kept as 16-bit floats, half the memory of
float32 (for CIFAR-100 with a 256-wide teacher, 50 000 x 356 values take
36 MB instead of 71 MB). A tensor ``X`` already on an accelerator is run
there and its outputs stay there (keyed per call, not shared across fits:
hashing its samples would copy them back to the host).
"""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from typing import Any

import numpy as np
import torch
from torch import nn

from .batching import TeacherOutputs
from .features import forward_with_features
from .precision import autocast, autocast_dtype

__all__ = ["cached_teacher_outputs", "clear_teacher_cache", "compute_teacher_outputs"]


@torch.no_grad()
def compute_teacher_outputs(
    teacher: nn.Module,
    X: Any,
    *,
    layer: str | None = None,
    device: Any = "cpu",
    batch_size: int = 512,
    mixed_precision: str | None = None,
) -> TeacherOutputs:
    """Run ``teacher`` (already frozen, in eval mode) over ``X`` in batches.

    Parameters
    ----------
    mixed_precision : {None, "bf16", "fp16"}, default=None
        Run under autocast and store the outputs at that precision.

    Returns
    -------
    outputs : TeacherOutputs
        Logits and features of every sample, float32 (or the
        ``mixed_precision`` dtype) on the CPU, or on ``X``'s device when
        ``X`` is a tensor on an accelerator.
    """
    X = X if isinstance(X, torch.Tensor) else torch.from_numpy(np.asarray(X))
    dtype = autocast_dtype(mixed_precision) or torch.float32
    home = X.device
    logits, features = [], []
    for start in range(0, len(X), batch_size):
        batch = X[start : start + batch_size].to(device)
        with autocast(device, mixed_precision):
            z, f = forward_with_features(teacher, batch, layer=layer)
        logits.append(z.to(home, dtype))
        features.append(f.to(home, dtype))
    return TeacherOutputs(torch.cat(logits), torch.cat(features))


def sample_keys(X: Any) -> list[bytes]:
    """A 128-bit digest of each sample's bytes."""
    rows = X.numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
    rows = np.ascontiguousarray(rows).reshape(len(rows), -1)
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in rows]


def weights_fingerprint(model: nn.Module) -> bytes:
    """A digest of a model's parameters and buffers (and their names)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.digest()


class _SampleCache:
    """Teacher outputs of one teacher state, row per distinct sample."""

    def __init__(self) -> None:
        self.rows: dict[bytes, int] = {}
        self.logits: list[torch.Tensor] = []
        self.features: list[torch.Tensor] = []
        self.lock = threading.Lock()

    def lookup(self, keys: list[bytes], compute: Any) -> TeacherOutputs:
        with self.lock:
            missing: dict[bytes, int] = {}
            for position, key in enumerate(keys):
                if key not in self.rows and key not in missing:
                    missing[key] = position
            if missing:
                outputs = compute(np.fromiter(missing.values(), dtype=np.int64))
                start = sum(len(chunk) for chunk in self.logits)
                self.rows.update({key: start + i for i, key in enumerate(missing)})
                self.logits.append(outputs.logits)
                self.features.append(outputs.features)
                if len(self.logits) > 1:  # keep one contiguous block
                    self.logits = [torch.cat(self.logits)]
                    self.features = [torch.cat(self.features)]
            index = torch.tensor([self.rows[key] for key in keys], dtype=torch.long)
            return TeacherOutputs(self.logits[0][index], self.features[0][index])


_CACHES: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], _SampleCache]]
_CACHES = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def cached_teacher_outputs(
    owner: nn.Module,
    teacher: nn.Module,
    X: Any,
    *,
    layer: str | None = None,
    device: Any = "cpu",
    batch_size: int = 512,
    memory: Any = None,
    mixed_precision: str | None = None,
) -> TeacherOutputs:
    """Teacher outputs for ``X``, computed only for samples not seen before.

    Parameters
    ----------
    owner : torch.nn.Module
        The user's teacher object: the cache lives as long as it does and is
        shared by every estimator (clone) that holds it.
    teacher : torch.nn.Module
        The frozen module to run (``owner`` itself, or its frozen copy).
    X : ndarray or torch.Tensor
    layer, device, batch_size
        As in :func:`compute_teacher_outputs`.
    memory : joblib.Memory, str, path or None, default=None
        A joblib cache (or its folder) to use instead of the in-process one:
        it persists across processes and runs, keyed by the teacher's
        weights and the whole of ``X``.
    mixed_precision : {None, "bf16", "fp16"}, default=None
        The precision the outputs are computed and stored at (part of the key).

    Returns
    -------
    outputs : TeacherOutputs
    """
    if isinstance(X, torch.Tensor) and X.device.type != "cpu":
        return compute_teacher_outputs(
            teacher,
            X,
            layer=layer,
            device=device,
            batch_size=batch_size,
            mixed_precision=mixed_precision,
        )
    if memory is not None:
        import joblib

        if isinstance(memory, str | os.PathLike):
            memory = joblib.Memory(os.fspath(memory), verbose=0)
        cached = memory.cache(
            _compute_on_cpu_arrays, ignore=["teacher", "device", "batch_size"]
        )
        logits, features = cached(
            weights_fingerprint(teacher),
            teacher,
            np.asarray(X),
            layer,
            device,
            batch_size,
            mixed_precision,
        )
        return TeacherOutputs(torch.from_numpy(logits), torch.from_numpy(features))

    key = (layer, weights_fingerprint(teacher), mixed_precision)
    with _CACHES_LOCK:
        per_teacher = _CACHES.setdefault(owner, {})
        cache = per_teacher.setdefault(key, _SampleCache())

    def compute(positions: np.ndarray) -> TeacherOutputs:
        subset = (
            X[torch.from_numpy(positions)]
            if isinstance(X, torch.Tensor)
            else X[positions]
        )
        return compute_teacher_outputs(
            teacher,
            subset,
            layer=layer,
            device=device,
            batch_size=batch_size,
            mixed_precision=mixed_precision,
        )

    return cache.lookup(sample_keys(X), compute)


def _compute_on_cpu_arrays(
    fingerprint: bytes,
    teacher: nn.Module,
    X: np.ndarray,
    layer: str | None,
    device: Any,
    batch_size: int,
    mixed_precision: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """joblib's cache key: the weights' fingerprint, ``X``, ``layer`` and the
    precision. Stored as float32 (numpy has no bfloat16); the precision's
    rounding is kept."""
    outputs = compute_teacher_outputs(
        teacher,
        X,
        layer=layer,
        device=device,
        batch_size=batch_size,
        mixed_precision=mixed_precision,
    )
    return outputs.logits.float().numpy(), outputs.features.float().numpy()


def clear_teacher_cache() -> None:
    """Forget every cached teacher output held in this process."""
    with _CACHES_LOCK:
        _CACHES.clear()
