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

Where entries live: an :class:`OutputStore`. The in-process store (the
default) keeps them per sample; ``memory=`` keeps them in a joblib cache,
on disk, per data set. Both give the same outputs: the dtype of the
precision, on ``X``'s device (see
:func:`~projkd.teacher.inference.output_device`), bit for bit the values
the teacher computed. joblib stores host arrays: the outputs are copied to
the host first (from any device), bfloat16 as its bit pattern (numpy has
no bfloat16), and restored exactly (:func:`to_host_array`,
:func:`from_host_array`).
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ..training.batching import TeacherOutputs
from .fingerprint import sample_keys, samples_digest, teacher_fingerprint
from .inference import compute_teacher_outputs, output_device, output_dtype

__all__ = [
    "JoblibStore",
    "OutputStore",
    "cached_teacher_outputs",
    "clear_teacher_cache",
    "from_host_array",
    "set_teacher_cache_limit",
    "teacher_cache_info",
    "to_host_array",
]

DEFAULT_MAX_BYTES = 2 * 2**30

Compute = Callable[[np.ndarray | None], TeacherOutputs]
"""Computes the outputs of the samples at the given positions of ``X``
(``None``: all of them, in order)."""


class OutputStore(Protocol):
    """Where the teacher outputs of one teacher state, layer and precision
    are kept.

    ``lookup(keys, compute)`` returns the outputs of the samples whose
    :func:`~projkd.teacher.fingerprint.sample_keys` are ``keys``, in order,
    calling ``compute`` for what it does not hold; at
    :func:`~projkd.teacher.inference.output_dtype` on
    :func:`~projkd.teacher.inference.output_device` of the data, as
    :func:`~projkd.teacher.inference.compute_teacher_outputs` returns them.
    """

    def lookup(self, keys: list[bytes], compute: Compute) -> TeacherOutputs:
        """The outputs of the samples ``keys``, in order."""
        ...


class _SampleCache:
    """Teacher outputs of one teacher state, row per distinct sample: the
    in-process :class:`OutputStore`."""

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
                positions = np.fromiter(missing.values(), dtype=np.int64)
                # all new (0, 1, ..., n - 1): X as it is, not a copy of it
                everything = len(positions) == len(keys)
                outputs = compute(None if everything else positions)
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
        the samples of ``X``, in order (:class:`JoblibStore`). Its outputs
        are the in-process cache's: same dtype, device and values.
    mixed_precision : {None, "bf16", "fp16"}, default=None
        The precision the outputs are computed and stored at (part of the key).

    Returns
    -------
    outputs : TeacherOutputs
        At the precision's dtype (float32 without one), on ``X``'s device
        for a tensor, else on the CPU.
    """
    if isinstance(X, torch.Tensor):
        X = X.detach()  # never part of a graph: keys and outputs read it only
    fingerprint = teacher_fingerprint(teacher, X, layer=layer, device=device)
    keys = sample_keys(X)
    # outputs live on X's device: one entry per device, so that blocks of
    # two devices are never joined
    home = output_device(X)
    store: OutputStore
    if memory is not None:
        store = JoblibStore(memory, fingerprint, layer, mixed_precision, home)
    else:
        with _CACHES_LOCK:
            per_teacher = _CACHES.setdefault(owner, {})
            store = per_teacher.setdefault(
                (layer, fingerprint, mixed_precision, home), _SampleCache()
            )
            store.last_used = next(_CLOCK)

    def compute(positions: np.ndarray | None) -> TeacherOutputs:
        subset = X
        if positions is not None:
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

    outputs = store.lookup(keys, compute)
    with _CACHES_LOCK:
        _evict()
    return outputs


class JoblibStore:
    """The :class:`OutputStore` of ``memory=``: a joblib cache, on disk.

    One entry per data set: keyed by the teacher's fingerprint, the digest
    of the samples' keys in order, ``layer`` and the precision. Entries are
    host arrays, shared by every device; an output is restored to its dtype
    and to ``home`` when read.

    Parameters
    ----------
    memory : joblib.Memory, str or path
        The cache, or its folder.
    fingerprint : bytes
        :func:`~projkd.teacher.fingerprint.teacher_fingerprint`.
    layer : str or None
        The feature layer.
    mixed_precision : {None, "bf16", "fp16"}
        The precision of the outputs.
    home : torch.device
        Where the outputs are returned.
    """

    def __init__(
        self,
        memory: Any,
        fingerprint: bytes,
        layer: str | None,
        mixed_precision: str | None,
        home: torch.device,
    ) -> None:
        if isinstance(memory, str | os.PathLike):
            import joblib

            memory = joblib.Memory(os.fspath(memory), verbose=0)
        self.memory = memory
        self.key = (fingerprint, layer, mixed_precision)
        self.dtype = output_dtype(mixed_precision)
        self.home = home

    def lookup(self, keys: list[bytes], compute: Compute) -> TeacherOutputs:
        """The outputs of ``keys``: read from the cache, or computed (all
        samples) and written to it."""
        stored = self.memory.cache(_stored_outputs, ignore=["compute"])
        logits, features = stored(*self.key, samples_digest(keys), compute)
        return TeacherOutputs(
            from_host_array(logits, self.dtype, self.home),
            from_host_array(features, self.dtype, self.home),
        )


def _stored_outputs(
    fingerprint: bytes,
    layer: str | None,
    mixed_precision: str | None,
    data: bytes,
    compute: Compute,
) -> tuple[np.ndarray, np.ndarray]:
    """What joblib stores, keyed by all but ``compute`` (``data``, the
    samples' digest, stands for ``X``)."""
    outputs = compute(None)
    return to_host_array(outputs.logits), to_host_array(outputs.features)


def to_host_array(tensor: torch.Tensor) -> np.ndarray:
    """A tensor on any device as a numpy array on the host, bit for bit.

    Copied to the host first (a CUDA tensor has no ``.numpy()``); a
    bfloat16 tensor, which numpy cannot hold, becomes the ``int16`` array of
    its bit patterns. :func:`from_host_array` restores it.

    Examples
    --------
    >>> import torch
    >>> t = torch.tensor([1.5, -2.0], dtype=torch.bfloat16)
    >>> to_host_array(t).dtype
    dtype('int16')
    >>> torch.equal(from_host_array(to_host_array(t), torch.bfloat16, "cpu"), t)
    True
    """
    host = tensor.detach().cpu()
    if host.dtype == torch.bfloat16:
        host = host.view(torch.int16)
    return host.numpy()


def from_host_array(array: np.ndarray, dtype: torch.dtype, device: Any) -> torch.Tensor:
    """The tensor :func:`to_host_array` gave ``array`` for: of ``dtype``
    (bfloat16 from its bit patterns), on ``device``."""
    # a read-only array (joblib's mmap_mode) is copied: tensors are writable
    tensor = torch.from_numpy(np.require(array, requirements=["C", "W"]))
    if dtype == torch.bfloat16:
        tensor = tensor.view(torch.bfloat16)
    return tensor.to(device=device, dtype=dtype)


def clear_teacher_cache() -> None:
    """Forget every cached teacher output held in this process."""
    with _CACHES_LOCK:
        _CACHES.clear()
