"""Data-parallel defects, each checked in this one process.

Where a test needs several processes or a GPU it fakes only what the code
under test asks of them: the accelerator's process count, rank and device
(the sharding is computed from those three), or a prefetcher that stays on
the host.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from skorch import NeuralNetClassifier
from skorch.callbacks import Checkpoint
from torch import nn

from projkd.lockstep import EpochSeed
from projkd.training.batching import ArrayBatches, ArrayDataset
from projkd.training.device import Prefetcher

from .test_accelerate import make_accelerated

accelerate = pytest.importorskip("accelerate")

N, BATCH, WORLD = 24, 4, 2  # three global batches of 8


def fake_accelerator(rank: int, device: str = "cuda") -> SimpleNamespace:
    """What sharding asks of an accelerator: its device, count and rank."""
    return SimpleNamespace(
        device=torch.device(device),
        num_processes=WORLD,
        process_index=rank,
        is_main_process=rank == 0,
        device_placement=True,
        prepare=lambda obj: obj,  # a DataLoader would be sharded; none here
    )


class HostPrefetcher(Prefetcher):
    """The prefetcher asked for a CUDA device, copying on the host instead
    (there is no GPU here); remembers the device it was asked for."""

    def __init__(self, batches, device):
        super().__init__(batches, torch.device("cpu"))
        self.requested = device


def samples(iterator) -> list[list[int]]:
    return [batch.flatten().long().tolist() for batch, _ in iterator]


def test_host_arrays_are_sharded_before_they_are_prefetched_to_a_gpu(monkeypatch):
    # data_device="cpu" (or data too large for the GPU) with a CUDA compute
    # device: the batches are prefetched; each process must still train on
    # its own slice of every global batch, not on all of the data
    import projkd.training.arrays

    monkeypatch.setattr(projkd.training.arrays, "Prefetcher", HostPrefetcher)
    X = torch.arange(N, dtype=torch.float32)[:, None]
    dataset = ArrayDataset(X, torch.zeros(N))
    single = ArrayBatches(dataset, np.arange(N), WORLD * BATCH, shuffle=True, seed=0)
    global_batches = samples(single)
    shards, validation = [], []
    for rank in range(WORLD):
        est = make_accelerated(
            accelerator=fake_accelerator(rank),
            batch_size=BATCH,
            data_device="cpu",
            random_state=0,
        )
        iterator = est.get_iterator(dataset, training=True)
        assert isinstance(iterator, HostPrefetcher)  # still prefetched...
        assert iterator.requested == torch.device("cuda")
        shards.append(samples(iterator))  # ...but only this process's part
        validation.append(est.get_iterator(dataset, training=False))
    assert [len(batch) for shard in shards for batch in shard] == [BATCH] * 6
    for g, batch in enumerate(global_batches):
        assert shards[0][g] + shards[1][g] == batch  # rank 0's half, then rank 1's
    for iterator in validation:  # validation and prediction: all, on every process
        assert sorted(sum(samples(iterator), [])) == list(range(N))


def test_epoch_seed_gives_each_process_its_own_stream():
    # every process seeds alike at each epoch's start; the rank must enter
    # the seed, or sample j of every slice gets the same crop and dropout
    def draws(rank: int | None, epoch: int = 3) -> torch.Tensor:
        net = SimpleNamespace(history=[{}] * epoch)
        if rank is not None:
            net.accelerator = SimpleNamespace(process_index=rank, num_processes=2)
        EpochSeed(7).on_epoch_begin(net)
        return torch.rand(5)

    assert torch.equal(draws(0), draws(None))  # rank 0 draws as one process
    assert not torch.equal(draws(1), draws(0))
    assert torch.equal(draws(1), draws(1))  # and stays reproducible
    assert not torch.equal(draws(1, epoch=4), draws(1))  # a new epoch, new draws


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_an_accelerated_fit_seeds_and_tunes_on_the_accelerators_device(
    small_digits, monkeypatch, method
):
    # the accelerated estimator has device=None; on a GPU, seeding with it
    # would not fork the CUDA generator and cuDNN would not be tuned
    from projkd import distiller

    asked: dict[str, list] = {"seeded": [], "cudnn_benchmark": []}
    for name in asked:
        real = getattr(distiller, name)

        def spy(*args, _real=real, _name=name):
            asked[_name].append(args[-1])  # the device
            return _real(*args)

        monkeypatch.setattr(distiller, name, spy)
    est = make_accelerated(random_state=0, max_epochs=1)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    getattr(est, method)(*small_digits)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's stream
    device = est.accelerator.device
    assert asked["seeded"] and asked["cudnn_benchmark"]
    for name, devices in asked.items():
        assert all(d is not None and torch.device(d) == device for d in devices), name


def test_seeded_forks_the_cuda_generator_of_the_device_it_is_given(monkeypatch):
    # with the accelerator's CUDA device (above), the fit's seed leaves the
    # caller's CUDA stream alone too
    from projkd.utils import seeded

    forked = []
    real = torch.random.fork_rng

    def spy(devices=None, **kwargs):
        forked.append(devices)
        return real(devices=[], **kwargs)  # no GPU to fork here

    monkeypatch.setattr(torch.random, "fork_rng", spy)
    with seeded(0, torch.device("cuda", 1)):
        pass
    with seeded(0, torch.device("cpu")):
        pass
    assert forked == [[1], []]


def accelerated_net(**params):
    """Any skorch net, data-parallel."""
    from projkd.parallel import DataParallelMixin

    class Net(DataParallelMixin, NeuralNetClassifier):
        pass

    torch.manual_seed(0)
    return Net(
        nn.Sequential(nn.Flatten(), nn.Linear(64, 10)),
        criterion=nn.CrossEntropyLoss,
        accelerator=accelerate.Accelerator(cpu=True),
        max_epochs=2,
        train_split=None,
        verbose=0,
        **params,
    )


def test_a_fresh_net_loads_a_checkpoint_into_its_bare_network(small_digits, tmp_path):
    X, y = small_digits
    checkpoint = Checkpoint(dirname=str(tmp_path), monitor=None)  # the last epoch
    trained = accelerated_net(callbacks=[checkpoint]).fit(X, y)
    fresh = accelerated_net(callbacks=[])
    fresh.load_params(checkpoint=checkpoint)  # initialises the net first
    np.testing.assert_allclose(fresh.predict_proba(X), trained.predict_proba(X))


def test_a_net_without_an_accelerator_is_refused_before_anything_is_built(
    small_digits,
):
    net = accelerated_net().set_params(accelerator=None)
    with pytest.raises(ValueError, match=r"needs accelerator=accelerate\.Accelerator"):
        net.fit(*small_digits)
    assert not hasattr(net, "module_")
