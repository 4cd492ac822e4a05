"""projkd.training.device and projkd.training.precision on their own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from projkd.parallel.sharding import OnDevice
from projkd.training import device as device_data
from projkd.training.batching import (
    PREPARED,
    ArrayDataset,
    PreparedBatch,
    TeacherOutputs,
    keep_prepared,
    prepared_for,
)
from projkd.training.device import (
    DeviceStats,
    Prefetcher,
    cudnn_benchmark,
    nbytes,
    resolve_data_device,
    to_device,
)
from projkd.training.precision import autocast, autocast_dtype, grad_scaler


def test_auto_puts_data_on_the_accelerator_only_when_they_fit(monkeypatch):
    monkeypatch.setattr(device_data, "_free_memory", lambda device: 1000)
    fraction = device_data.DEVICE_MEMORY_FRACTION
    small, large = int(0.9 * fraction * 1000), int(1.1 * fraction * 1000)
    assert resolve_data_device("auto", "cuda", small) == torch.device("cuda")
    assert resolve_data_device("auto", "cuda", large) == torch.device("cpu")
    assert resolve_data_device("auto", "cpu", 1) == torch.device("cpu")
    assert resolve_data_device("auto", None, 1) == torch.device("cpu")
    assert resolve_data_device("cpu", "cuda", small) == torch.device("cpu")


def test_nbytes_counts_arrays_tensors_and_tuples():
    outputs = PreparedBatch(torch.zeros(4, 2), torch.zeros(4, 3), torch.zeros(4))
    assert nbytes(np.zeros((2, 3), np.float32), None, outputs) == 24 + 4 * 4 * 6


def test_to_device_keeps_a_tensor_already_there_and_the_tuple_type():
    x = torch.arange(3.0)
    assert to_device(x, torch.device("cpu")) is x
    outputs = PreparedBatch(x, x, x)
    moved = to_device(outputs, torch.device("cpu"))
    assert isinstance(moved, PreparedBatch) and moved.inputs is x
    assert torch.equal(
        to_device(np.ones(2), torch.device("cpu")), torch.ones(2).double()
    )


def test_one_move_for_every_nested_batch():
    # the datasets, the prefetcher and the data-parallel batches move alike
    x = torch.arange(3.0)
    names = np.array(["a", "b"])  # not numbers: left as they are
    batch = (
        PreparedBatch(x, x, x),
        [np.arange(3), None],
        {"mask": np.ones(2, dtype=bool), "names": names},
    )
    cpu = torch.device("cpu")
    moves = {
        "to_device": to_device(batch, cpu),
        "non_blocking": to_device(batch, cpu, non_blocking=True),
        "Prefetcher": next(iter(Prefetcher([batch], cpu))),
        "OnDevice": next(iter(OnDevice([batch], cpu))),
    }
    for how, moved in moves.items():
        assert type(moved) is tuple and isinstance(moved[0], PreparedBatch), how
        assert moved[0].inputs is x, how  # already there: not copied
        assert type(moved[1]) is list and moved[1][1] is None, how
        assert torch.equal(moved[1][0], torch.arange(3)), how
        assert moved[2]["mask"].dtype == torch.bool, how
        assert moved[2]["names"] is names, how
    assert to_device(None, cpu) is None


def test_device_stats_read_everything_in_order():
    stats = DeviceStats()
    stats.add("a", torch.tensor([1.0, 2.0], requires_grad=True) * 1)
    stats.add("b", torch.tensor([3.0, 4.0], dtype=torch.bfloat16))
    assert stats.read() == [("a", [1.0, 2.0]), ("b", [3.0, 4.0])]
    assert DeviceStats().read() == []


def test_prefetcher_on_the_cpu_passes_batches_through():
    batches = [(torch.ones(2), torch.zeros(2)), (torch.ones(1), torch.zeros(1))]
    prefetched = list(Prefetcher(batches, torch.device("cpu")))
    assert len(prefetched) == 2 and torch.equal(prefetched[1][0], torch.ones(1))


def test_what_travels_beside_a_batch_moves_with_it():
    # the batch skorch sees is (X, y); the teacher's outputs travel beside X
    before = len(PREPARED)
    dataset = ArrayDataset(
        torch.arange(8.0).reshape(4, 2),
        torch.arange(4),
        TeacherOutputs(torch.ones(4, 3), torch.zeros(4, 5)),
    )
    X, y = dataset.batch(np.array([2, 0]))
    assert type(X) is torch.Tensor and torch.equal(y, torch.tensor([2, 0]))
    prepared = prepared_for(X)
    assert prepared.inputs is X and prepared.teacher_features.shape == (2, 5)
    cpu = torch.device("cpu")
    for moved in (
        next(iter(Prefetcher([(X, y)], cpu))),
        next(iter(OnDevice([(X, y)], cpu))),
    ):
        assert prepared_for(moved[0]).inputs is moved[0]
    del X, prepared, moved
    assert len(PREPARED) == before  # the entries went with their batches
    assert prepared_for(dataset.batch(np.array([1]))[0]).inputs.shape == (1, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_prefetcher_copies_to_cuda_with_what_travels_beside():
    X = torch.ones(2, 2)
    keep_prepared(X, PreparedBatch(X, torch.ones(2, 3), torch.ones(2, 4)))
    ((x, _),) = list(Prefetcher([(X, None)], torch.device("cuda")))
    prepared = prepared_for(x)
    assert prepared.inputs is x and prepared.teacher_logits.is_cuda


def test_cudnn_benchmark_is_on_for_cuda_only_and_restored():
    before = torch.backends.cudnn.benchmark
    with cudnn_benchmark("cuda"):
        assert torch.backends.cudnn.benchmark
    assert torch.backends.cudnn.benchmark == before
    with cudnn_benchmark("cpu"):
        assert torch.backends.cudnn.benchmark == before


def test_precision_settings():
    assert autocast_dtype(None) is None
    assert autocast_dtype("fp16") is torch.float16
    with pytest.raises(ValueError, match="mixed_precision='fp8'"):
        autocast_dtype("fp8")
    with autocast("cpu", None):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32
    assert grad_scaler("cpu", "bf16") is None and grad_scaler("cpu", None) is None
    assert isinstance(grad_scaler("cpu", "fp16"), torch.amp.GradScaler)
