"""Teacher outputs computed once and reused: within a fit, across folds and
candidates of a search, and (with ``memory=``) across processes and runs.

Without training-time augmentation the frozen teacher's output on a sample
never changes, so running it every step of every epoch of every fit is
waste. :func:`cached_teacher_outputs` computes it in large no-grad batches
and remembers it *per sample* for each teacher, so the folds of a
cross-validation, whose training sets overlap, run the teacher on each
sample about once in all.

What identifies a teacher. An entry is found again only for

- the same teacher *object* (the user's module, or estimator): entries live
  as long as it does, and go with it;
- the same feature ``layer``;
- the same *state and behaviour*: a digest of its class, the ``training``
  flags, every parameter and buffer (persistent or not) and its logits and
  features on a fixed probe batch shaped like the data
  (:func:`projkd.teacher.fingerprint.teacher_fingerprint`). Changing a weight, a
  non-persistent buffer, a Python attribute or a method that alters what
  the teacher computes gives a new digest, hence new outputs, never stale
  ones. Only a change that no tensor shows *and* that leaves the outputs on
  the probe bit-identical while changing them on real data could go
  unnoticed: call :func:`clear_teacher_cache` after such surgery, or pass
  ``cache_teacher=False``.

What identifies a sample: a digest of its bytes, computed where it lives
(BLAKE2b on the host; a universal hash on the device for GPU tensors, so no
sample is copied to the host to be keyed).

Memory: the cache holds at most ``max_bytes`` of outputs (2 GiB by default;
:func:`set_teacher_cache_limit`). After each call the least recently used
entries (one per teacher state) are dropped until it fits; an entry larger
than the limit on its own is not kept at all. :func:`teacher_cache_info`
reports the current use.

A miss costs a recomputation, never a wrong output: on GPUs whose kernels
are not deterministic the probe may differ from call to call, and the cache
then recomputes instead of sharing.
Precision: outputs are stored at the precision of the training step. With
``mixed_precision="bf16"`` or ``"fp16"`` the teacher runs under autocast and
its logits and features are kept as 16-bit floats, half the memory of
float32 (for CIFAR-100 with a 256-wide teacher, 50 000 x 356 values take
36 MB instead of 71 MB); the precision is part of the entry's key. Outputs
of a tensor ``X`` on an accelerator stay on that device.

"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
import weakref
from typing import Any

import numpy as np
import torch
from torch import nn

from ..training.batching import TeacherOutputs
from .fingerprint import sample_keys, teacher_fingerprint
from .inference import compute_teacher_outputs

__all__ = [
    "cached_teacher_outputs",
    "clear_teacher_cache",
    "set_teacher_cache_limit",
    "teacher_cache_info",
]

DEFAULT_MAX_BYTES = 2 * 2**30


class _SampleCache:
    """Teacher outputs of one teacher state, row per distinct sample."""

    def __init__(self) -> None:
        self.rows: dict[bytes, int] = {}
        self.logits: list[torch.Tensor] = []
        self.features: list[torch.Tensor] = []
        self.lock = threading.Lock()
        self.last_used = 0

    @property
    def nbytes(self) -> int:
        tensors = [*self.logits, *self.features]
        return sum(t.numel() * t.element_size() for t in tensors)

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


_CACHES: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], _SampleCache]]
_CACHES = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()
_CLOCK = itertools.count(1)
_LIMIT: dict[str, int | None] = {"max_bytes": DEFAULT_MAX_BYTES}


def set_teacher_cache_limit(max_bytes: int | None) -> int | None:
    """Bound the memory of the in-process teacher cache.

    Parameters
    ----------
    max_bytes : int or None
        The most bytes of teacher outputs kept (2 GiB by default); ``0``
        keeps nothing (every fit computes its own outputs once), ``None``
        sets no bound. Applied at once: entries over the new limit are
        dropped, least recently used first.

    Returns
    -------
    previous : int or None
        The limit before, to restore it.

    Examples
    --------
    >>> from projkd.teacher import set_teacher_cache_limit
    >>> previous = set_teacher_cache_limit(512 * 2**20)  # 512 MiB
    >>> _ = set_teacher_cache_limit(previous)
    """
    if max_bytes is not None and (
        isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0
    ):
        raise ValueError(
            f"max_bytes must be a non-negative int or None, got {max_bytes!r}; "
            "e.g. set_teacher_cache_limit(2 * 2**30) for 2 GiB."
        )
    with _CACHES_LOCK:
        previous = _LIMIT["max_bytes"]
        _LIMIT["max_bytes"] = max_bytes
        _evict()
    return previous


def teacher_cache_info() -> dict[str, Any]:
    """What the in-process teacher cache holds now.

    Returns
    -------
    info : dict
        ``teachers`` (live teacher objects with entries), ``entries`` (one
        per teacher state and layer), ``samples``, ``nbytes`` and
        ``max_bytes``.
    """
    with _CACHES_LOCK:
        entries = [cache for caches in _CACHES.values() for cache in caches.values()]
        return {
            "teachers": sum(1 for caches in _CACHES.values() if caches),
            "entries": len(entries),
            "samples": sum(len(cache.rows) for cache in entries),
            "nbytes": sum(cache.nbytes for cache in entries),
            "max_bytes": _LIMIT["max_bytes"],
        }


def _evict() -> None:
    """Drop least recently used entries until the cache fits its limit.

    Called with ``_CACHES_LOCK`` held.
    """
    limit = _LIMIT["max_bytes"]
    if limit is None:
        return
    entries = [
        (cache.last_used, key, caches, cache.nbytes)
        for caches in _CACHES.values()
        for key, cache in caches.items()
    ]
    total = sum(entry[-1] for entry in entries)
    for _, key, caches, nbytes in sorted(entries, key=lambda entry: entry[0]):
        if total <= limit:
            break
        del caches[key]
        total -= nbytes


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
    owner : torch.nn.Module or estimator
        The user's teacher object: its entries live as long as it does and
        are shared by every estimator (clone) that holds it.
    teacher : torch.nn.Module
        The frozen module to run (``owner`` itself, or its frozen copy).
    X : ndarray or torch.Tensor
        Any tensor: one that requires grad is read detached, one on a GPU
        is keyed on the GPU.
    layer, device, batch_size
        As in :func:`compute_teacher_outputs`.
    memory : joblib.Memory, str, path or None, default=None
        A joblib cache (or its folder) to use instead of the in-process one:
        it persists across processes and runs, keyed by the teacher's
        fingerprint (see the module's notes), ``layer`` and the digests of
        the samples of ``X``, in order.
    mixed_precision : {None, "bf16", "fp16"}, default=None
        The precision the outputs are computed and stored at (part of the key).

    Returns
    -------
    outputs : TeacherOutputs
    """
    if isinstance(X, torch.Tensor):
        X = X.detach()  # never part of a graph: keys and outputs read it only
    fingerprint = teacher_fingerprint(teacher, X, layer=layer, device=device)
    keys = sample_keys(X)
    if memory is not None:
        import joblib

        if isinstance(memory, str | os.PathLike):
            memory = joblib.Memory(os.fspath(memory), verbose=0)
        cached = memory.cache(
            _compute_on_cpu_arrays, ignore=["teacher", "X", "device", "batch_size"]
        )
        data = hashlib.blake2b(b"".join(keys), digest_size=16).digest()
        logits, features = cached(
            fingerprint, data, layer, teacher, X, device, batch_size, mixed_precision
        )
        return TeacherOutputs(torch.from_numpy(logits), torch.from_numpy(features))

    with _CACHES_LOCK:
        per_teacher = _CACHES.setdefault(owner, {})
        # outputs live on X's device (see compute_teacher_outputs): one cache
        # per device, so that blocks of two devices are never joined
        home = X.device if isinstance(X, torch.Tensor) else torch.device("cpu")
        cache = per_teacher.setdefault(
            (layer, fingerprint, mixed_precision, home), _SampleCache()
        )
        cache.last_used = next(_CLOCK)

    def compute(positions: np.ndarray) -> TeacherOutputs:
        subset = (
            X[torch.from_numpy(positions).to(X.device)]
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

    outputs = cache.lookup(keys, compute)
    with _CACHES_LOCK:
        _evict()
    return outputs


def _compute_on_cpu_arrays(
    fingerprint: bytes,
    data: bytes,
    layer: str | None,
    teacher: nn.Module,
    X: Any,
    device: Any,
    batch_size: int,
    mixed_precision: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """joblib's cache key: the teacher's fingerprint, the samples' digest,
    ``layer`` and the precision (``X`` itself is not hashed: ``data`` stands
    for it). Stored as float32 (numpy has no bfloat16); the precision's
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
