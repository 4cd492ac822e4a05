"""Content digests of samples and teachers (projkd.teacher.fingerprint).

The device hash runs on whatever device its tensor is on, so its arithmetic
is checked here on the CPU against a plain-Python reference.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from projkd.models import DigitsCNN
from projkd.teacher.fingerprint import (
    N_HASHES,
    WIDTH,
    P,
    _coefficients,
    device_row_hashes,
    sample_keys,
    teacher_fingerprint,
    weights_fingerprint,
)


def reference_hash(row_bytes: bytes) -> list[int]:
    """The documented hash, in Python integers (no overflow possible)."""
    if len(row_bytes) % 2:
        values = list(row_bytes)
    else:
        values = [
            int.from_bytes(row_bytes[i : i + 2], "little")
            for i in range(0, len(row_bytes), 2)
        ]
    a = _coefficients(torch.device("cpu")).tolist()
    while True:
        n_blocks = -(-len(values) // WIDTH)
        values = values + [0] * (n_blocks * WIDTH - len(values))
        out = []
        for b in range(n_blocks):
            block = values[b * WIDTH : (b + 1) * WIDTH]
            out += [
                sum(w * c for w, c in zip(block, a[j], strict=True)) % P
                for j in range(N_HASHES)
            ]
        values = out
        if n_blocks <= 1:
            return values


@pytest.mark.parametrize(
    "shape, dtype",
    [((3, 5), torch.float32), ((2, 1, 40, 40), torch.float32), ((4, 3), torch.uint8)],
    ids=["one-block", "three-levels", "odd-bytes"],
)
def test_device_hash_matches_the_reference(shape, dtype):
    X = (torch.rand(shape) * 200).to(dtype)
    hashes = device_row_hashes(X)
    assert hashes.shape == (shape[0], N_HASHES) and hashes.dtype == torch.int64
    for row, expected in zip(X, hashes.tolist(), strict=True):
        assert expected == reference_hash(row.contiguous().numpy().tobytes())


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=30),
    st.integers(0, 29),
)
def test_device_hash_tells_rows_apart_and_ignores_neighbours(values, position):
    row = torch.tensor(values, dtype=torch.float32)
    changed = row.clone()
    changed[position % len(values)] = torch.nextafter(
        changed[position % len(values)], torch.tensor(np.inf)
    )
    batch = torch.stack([row, changed, row])
    hashes = device_row_hashes(batch)
    assert torch.equal(hashes[0], hashes[2])
    assert not torch.equal(hashes[0], hashes[1])
    assert torch.equal(device_row_hashes(row[None])[0], hashes[0])  # alone = in a batch


def test_device_hash_is_chunked_without_changing_values(monkeypatch):
    import projkd.teacher.fingerprint as fingerprint

    X = torch.randn(50, 300)
    whole = device_row_hashes(X)
    monkeypatch.setattr(fingerprint, "_CHUNK_ELEMENTS", 700)  # ~1 row per chunk
    torch.testing.assert_close(device_row_hashes(X), whole, rtol=0, atol=0)


def test_sample_keys_read_any_host_tensor():
    X = torch.randn(6, 3, requires_grad=True)
    keys = sample_keys(X)
    assert keys == sample_keys(X.detach().numpy())
    assert len(set(keys)) == 6
    bf16 = sample_keys(X.detach().to(torch.bfloat16))
    assert len(bf16) == 6 and len(set(bf16)) == 6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_sample_keys_are_computed_on_the_device():
    X = torch.randn(7, 1, 8, 8)
    keys = sample_keys(X.cuda().requires_grad_())
    expected = [row.tobytes() for row in device_row_hashes(X).numpy()]
    assert keys == expected


def test_teacher_fingerprint_sees_state_and_behaviour():
    torch.manual_seed(0)
    teacher = DigitsCNN(width=4, n_features=8).eval()
    X = np.zeros((10, 1, 8, 8), np.float32)
    first = teacher_fingerprint(teacher, X, layer=None, device="cpu")
    assert first == teacher_fingerprint(teacher, X + 1, layer=None, device="cpu")
    assert first != teacher_fingerprint(teacher, X, layer="fc", device="cpu")
    teacher.register_buffer("unused", torch.zeros(1), persistent=False)
    second = teacher_fingerprint(teacher, X, layer=None, device="cpu")
    assert second != first  # a new buffer
    teacher.unused.fill_(1.0)
    assert teacher_fingerprint(teacher, X, layer=None, device="cpu") != second


def test_empty_inputs_hash_without_error():
    assert device_row_hashes(torch.empty(0, 5)).shape == (0, N_HASHES)
    assert torch.equal(device_row_hashes(torch.empty(2, 0)), torch.zeros(2, N_HASHES))
    assert sample_keys(np.zeros((0, 3), np.float32)) == []


def test_weights_fingerprint_reads_any_dtype_and_keeps_its_float32_digests():
    import hashlib

    model = DigitsCNN(width=4, n_features=8)
    digest = hashlib.blake2b(digest_size=16)  # the digest run keys were made of
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    assert weights_fingerprint(model) == digest.digest()
    bf16 = weights_fingerprint(model.to(torch.bfloat16))  # numpy has no bf16
    assert len(bf16) == 16 and bf16 != digest.digest()
