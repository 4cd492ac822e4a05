"""Content digests of samples and teachers, computed where the data live.

The teacher cache keys its entries by what a teacher *is* and what a sample
*holds*, not by object identity. Both digests are computed without moving
data between host and device:

- data in host memory (numpy arrays, CPU tensors) are digested with BLAKE2b
  over their bytes, through zero-copy views;
- data in device memory (CUDA tensors) are digested on the device by a
  polynomial universal hash (below); only the digests, 32 bytes per sample,
  reach the host.

The device hash. A sample's bytes are read as 16-bit words ``w_i`` (bytes
when a row holds an odd number of them) and cut into blocks of ``WIDTH``
words. Each block gets ``N_HASHES`` independent values
``h_j = (sum_i w_i * a_ji) mod P`` with ``P = 2**31 - 1`` and fixed
coefficients ``a_ji`` drawn once from a seeded generator in ``[1, P)``.
Words are below ``2**16 < P``, so two different blocks are distinct vectors
modulo ``P`` and agree on one ``h_j`` with probability at most ``1 / (P - 1)``
over the coefficients (Carter and Wegman's universal hashing); on all four
with at most ``2**-123``. The block values of a row (each below ``P``) are
hashed again, block by block, until one block is left. Every product is
below ``2**62`` and is reduced modulo ``P`` before ``WIDTH`` of them are
summed (below ``2**41``), so int64 arithmetic never overflows, on any
device. The coefficients are fixed, so data built to collide *on purpose*
could; no data set does by chance.

References
----------
Carter, Wegman. "Universal classes of hash functions", J. Computer and
System Sciences 18(2), 1979, doi:10.1016/0022-0000(79)90044-8.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..features import forward_with_features

__all__ = [
    "device_row_hashes",
    "sample_keys",
    "samples_digest",
    "teacher_fingerprint",
    "weights_fingerprint",
]

P = 2**31 - 1
WIDTH = 1024
N_HASHES = 4
_CHUNK_ELEMENTS = 2**22  # words hashed at once: bounds the int64 temporaries
_SEED = 0x5EED_CAC4E
_COEFFICIENTS: dict[torch.device, Tensor] = {}

PROBE_SIZE = 4
"""Samples in the probe batch whose outputs identify a teacher's behaviour."""
_PROBE_SEED = 0x7EAC4E5


def _coefficients(device: torch.device) -> Tensor:
    coefficients = _COEFFICIENTS.get(device)
    if coefficients is None:
        generator = torch.Generator().manual_seed(_SEED)
        coefficients = torch.randint(
            1, P, (N_HASHES, WIDTH), generator=generator, dtype=torch.int64
        ).to(device)
        _COEFFICIENTS[device] = coefficients
    return coefficients


def _words(rows: Tensor) -> Tensor:
    """The bytes of each row of a 2-D tensor as int64 words below ``2**16``."""
    raw = rows.contiguous().view(torch.uint8)
    if raw.shape[1] % 2:
        return raw.to(torch.int64)
    return raw.view(torch.int16).to(torch.int64) & 0xFFFF


def _hash_blocks(values: Tensor) -> Tensor:
    """``(N, W)`` int64 values below ``P`` -> ``(N, ceil(W / WIDTH) * 4)``."""
    coefficients = _coefficients(values.device)
    n, width = values.shape
    values = F.pad(values, (0, -width % WIDTH)) if width % WIDTH else values
    blocks = values.reshape(n, -1, WIDTH)
    out = torch.empty(
        (n, blocks.shape[1], N_HASHES), dtype=torch.int64, device=values.device
    )
    for j in range(N_HASHES):
        out[..., j] = (blocks * coefficients[j]).remainder_(P).sum(-1).remainder_(P)
    return out.reshape(n, -1)


def device_row_hashes(X: Tensor) -> Tensor:
    """The universal hash of each sample of ``X``, computed on ``X``'s device.

    Parameters
    ----------
    X : torch.Tensor of shape (N, ...)
        Any dtype, any device; it is read, never copied to the host.

    Returns
    -------
    hashes : torch.Tensor of shape (N, 4), int64, on ``X``'s device
        Equal rows give equal hashes; different rows of the same shape and
        dtype give different hashes except with probability ``2**-123``.
    """
    X = X.detach()
    n = len(X)
    rows = X.reshape(n, math.prod(X.shape[1:]))
    if rows.shape[1] == 0:  # nothing to read: every empty row hashes alike
        return torch.zeros((n, N_HASHES), dtype=torch.int64, device=X.device)
    per_chunk = max(1, _CHUNK_ELEMENTS // max(1, rows.shape[1] * 2))
    chunks = []
    for start in range(0, n, per_chunk):
        values = _words(rows[start : start + per_chunk])
        while True:
            blocks = -(-values.shape[1] // WIDTH)
            values = _hash_blocks(values)
            if blocks <= 1:
                break
        chunks.append(values)
    if not chunks:
        return torch.empty((0, N_HASHES), dtype=torch.int64, device=X.device)
    return torch.cat(chunks)


def _host_bytes(tensor: Tensor) -> np.ndarray:
    """A zero-copy uint8 view of a CPU tensor's elements, as numpy."""
    flat = tensor.detach().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy() if flat.numel() else np.empty(0, np.uint8)


def sample_keys(X: Any) -> list[bytes]:
    """A digest of each sample's bytes, computed where ``X`` lives.

    Host data (arrays, CPU tensors, tensors that require grad included) get a
    16-byte BLAKE2b digest per sample. Device tensors are hashed on the
    device (:func:`device_row_hashes`) and only their 32-byte keys are
    copied to the host. The two kinds of keys differ in length, so they
    never meet.
    """
    if isinstance(X, Tensor) and X.device.type != "cpu":
        hashes = device_row_hashes(X).cpu().numpy()
        return [row.tobytes() for row in hashes]
    rows_bytes: np.ndarray
    if isinstance(X, Tensor):
        rows = X.detach().contiguous().reshape(len(X), math.prod(X.shape[1:]))
        rows_bytes = (
            rows.view(torch.uint8).numpy()
            if rows.numel()
            else np.empty((len(X), 0), np.uint8)
        )
    else:
        X = np.ascontiguousarray(X)
        rows_bytes = X.reshape(len(X), math.prod(X.shape[1:]))
    return [
        hashlib.blake2b(memoryview(row), digest_size=16).digest() for row in rows_bytes
    ]


def samples_digest(keys: list[bytes]) -> bytes:
    """One digest of a sequence of :func:`sample_keys`, in order: what
    identifies a whole data set (the joblib cache's key)."""
    return hashlib.blake2b(b"".join(keys), digest_size=16).digest()


def update_with_tensors(digest: Any, tensors: Iterable[tuple[str, Tensor]]) -> None:
    """Feed named tensors (name, dtype, shape and content) into ``digest``.

    Host tensors are read through zero-copy views; the hashes of device
    tensors are computed on the device and copied to the host together.
    """
    on_device = []
    for name, tensor in tensors:
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        if tensor.device.type == "cpu":
            digest.update(_host_bytes(tensor))
        else:
            on_device.append(device_row_hashes(tensor.detach().reshape(1, -1)))
    if on_device:
        digest.update(torch.cat(on_device).cpu().numpy().tobytes())


def probe_batch(X: Any, device: Any) -> Tensor:
    """A fixed batch shaped and typed like the samples of ``X``.

    The same for every ``X`` of the same sample shape and dtype (standard
    normal values from a fixed seed, drawn on the CPU), so teacher
    fingerprints do not depend on which samples a fit holds.
    """
    dtype = X.dtype if isinstance(X, Tensor) else torch.from_numpy(X[:0]).dtype
    generator = torch.Generator().manual_seed(_PROBE_SEED)
    if dtype.is_floating_point:
        values = torch.randn((PROBE_SIZE, *X.shape[1:]), generator=generator)
        return values.to(device=device, dtype=dtype)
    rows = X[:PROBE_SIZE]  # no meaningful random input: the data's first rows
    return torch.as_tensor(rows).to(device)


@torch.no_grad()
def teacher_fingerprint(
    teacher: nn.Module, X: Any, *, layer: str | None, device: Any
) -> bytes:
    """What identifies a teacher for the cache: its state and its behaviour.

    A digest of

    - the teacher's class, and the ``training`` flag of every submodule;
    - every parameter and every buffer, persistent or not, by name, dtype,
      shape and content (a change to any tensor is seen);
    - its logits and features (at ``layer``) on :func:`probe_batch`: a
      change that no tensor shows -- a Python attribute, a patched method --
      is seen as soon as it changes what the teacher computes on the probe.

    Parameters
    ----------
    teacher : torch.nn.Module
        The frozen module that will be run.
    X : ndarray or torch.Tensor
        The data the teacher will be run on (only their sample shape and
        dtype are used).
    layer : str or None
        The feature layer.
    device : str or torch.device
        Where the teacher runs.

    Returns
    -------
    fingerprint : bytes
    """
    digest = hashlib.blake2b(digest_size=16)
    cls = type(teacher)
    digest.update(f"{cls.__module__}.{cls.__qualname__};{layer};".encode())
    digest.update(bytes(module.training for module in teacher.modules()))
    named = [
        *teacher.named_parameters(remove_duplicate=False),
        *teacher.named_buffers(remove_duplicate=False),
    ]
    logits, features = forward_with_features(
        teacher, probe_batch(X, device), layer=layer
    )
    named += [("probe.logits", logits), ("probe.features", features)]
    update_with_tensors(digest, named)
    return digest.digest()


def weights_fingerprint(model: nn.Module) -> bytes:
    """A digest of a model's parameters and buffers (and their names).

    The same on every device (for run keys such as
    :class:`~projkd.callbacks.ResumableCheckpoint`'s); the teacher cache uses
    :func:`teacher_fingerprint` instead.
    """
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(_host_bytes(tensor.detach().cpu()).tobytes())  # bf16 too
    return digest.digest()
