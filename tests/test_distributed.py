"""Data-parallel distillation in two CPU processes (gloo), against one process.

One module-scoped fixture starts two processes that fit every configuration
in turn (one start-up for all); the tests compare what each process saved
with each other and with a one-process ProjectorDistiller whose batch is the
global batch (2 x the per-process ``batch_size``).
"""

import copy
import hashlib
import os
from collections import Counter

import numpy as np
import pytest
import torch
from skorch.dataset import ValidSplit
from torch import nn
from torch.utils.data import TensorDataset

from projkd import ProjectorDistiller
from projkd.callbacks import ResumableCheckpoint
from projkd.lockstep import EpochSeed
from projkd.models import DigitsCNN

pytest.importorskip("accelerate")
if not torch.distributed.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

from .ddp_worker import RecordingNoise, spawn  # noqa: E402

N_SAMPLES, BATCH, WORLD = 256, 32, 2  # N divisible by the global batch, 64


def mlp():
    """A BatchNorm-free student whose features come from a forward hook."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def digits_cnn(batchnorm):
    """A zoo network (forward_features/forward_head), optionally without BN."""
    net = DigitsCNN(width=4, n_features=16)
    if not batchnorm:
        for index, layer in enumerate(net.features):
            if isinstance(layer, nn.BatchNorm2d):
                net.features[index] = nn.Identity()
    return net


def configurations(X, y, teacher, checkpoints):
    common = dict(
        batch_size=BATCH,
        max_epochs=2,
        optimizer=torch.optim.SGD,
        optimizer__momentum=0.9,
        lr=0.05,
        train_split=None,
        verbose=0,
        random_state=0,
    )
    torch.manual_seed(0)
    configs = {
        # identity logit projector and criterion: no parameters, not prepared
        "mlp_cached": dict(
            student=mlp(),
            params=dict(
                common,
                n_projectors=2,
                kd_weight=0.5,
                callbacks=[ResumableCheckpoint(dirname=checkpoints)],
            ),
        ),
        # a 0-projector ensemble (no parameters), a learned logit projector,
        # the teacher run at every step, and validation
        "mlp_uncached_valid": dict(
            student=mlp(),
            params=dict(
                common,
                n_projectors=0,
                logit_projector=True,
                kd_weight=0.5,
                cache_teacher=False,
                train_split=ValidSplit(4),
            ),
        ),
        "zoo_cached": dict(student=digits_cnn(batchnorm=False), params=common),
        "zoo_uncached": dict(
            student=digits_cnn(batchnorm=False),
            params=dict(common, cache_teacher=False, n_projectors=1),
        ),
        # BatchNorm and no seed: still one shuffled order, identical replicas
        "zoo_bn_unseeded": dict(
            student=digits_cnn(batchnorm=True),
            params=dict(common, random_state=None, max_epochs=2),
        ),
    }
    # the fast path through the accelerator: its bf16 autocast with the
    # estimator's channels_last, and its torch.compile (dynamo) of the
    # DDP-wrapped student (the "eager" backend: dynamo's graph capture and
    # DDP's bucketed graph breaks, without a C++ compiler)
    configs["zoo_bf16_channels_last"] = dict(
        student=digits_cnn(batchnorm=False),
        params=dict(common, channels_last=True, data_device="cpu"),
        accelerator=dict(mixed_precision="bf16"),
    )
    configs["zoo_dynamo"] = dict(
        student=digits_cnn(batchnorm=False),
        params=dict(common, cache_teacher=False, n_projectors=1),
        accelerator=dict(dynamo_backend="eager"),
    )
    # augmentation: each process must draw its own
    configs["zoo_augmented"] = dict(
        student=digits_cnn(batchnorm=False),
        params=dict(common, train_transform=RecordingNoise()),
    )
    # and with the CLI's EpochSeed, which reseeds every epoch's start
    configs["zoo_augmented_epoch_seed"] = dict(
        student=digits_cnn(batchnorm=False),
        params=dict(common, train_transform=RecordingNoise(), callbacks=[EpochSeed(0)]),
    )
    # the same run again: every process resumes from the finished checkpoint
    configs["mlp_cached_resumed"] = dict(configs["mlp_cached"])
    for config in configs.values():
        config.update(X=X, y=y, teacher=teacher)
    # a Dataset: sharded by Accelerate's DataLoader instead of projkd's batches
    configs["dataset"] = dict(
        X=TensorDataset(torch.as_tensor(X), torch.as_tensor(y).long()),
        y=None,
        teacher=teacher,
        student=mlp(),
        params=dict(common, max_epochs=1),
    )
    return configs


@pytest.fixture(scope="module")
def runs(digits, tmp_path_factory):
    X_train, _, y_train, _ = digits
    X, y = X_train[:N_SAMPLES], y_train[:N_SAMPLES]
    torch.manual_seed(0)
    teacher = DigitsCNN(width=8, n_features=32).eval()
    out = tmp_path_factory.mktemp("ddp")
    checkpoints = str(out / "checkpoints")
    configs = configurations(X, y, teacher, checkpoints)
    spawn(configs, str(out), world_size=WORLD)
    results = {
        name: [
            torch.load(out / f"{name}-{rank}.pt", weights_only=False)
            for rank in range(WORLD)
        ]
        for name in configs
    }
    return dict(configs=configs, results=results, checkpoints=checkpoints)


def one_process(config, **changes):
    """The same fit in this process, with the global batch."""
    params = dict(config["params"], batch_size=BATCH * WORLD, **changes)
    params["callbacks"] = []
    return ProjectorDistiller(
        config["teacher"], copy.deepcopy(config["student"]), **params
    ).fit(config["X"], config["y"])


def digests(X):
    rows = np.asarray(X).reshape(len(X), -1)
    return Counter(hashlib.sha1(row.tobytes()).hexdigest() for row in rows)


@pytest.mark.parametrize(
    "name", ["mlp_cached", "zoo_cached", "zoo_uncached", "zoo_bn_unseeded"]
)
def test_each_process_trains_on_its_half_of_every_epoch(runs, name):
    config, (first, second) = runs["configs"][name], runs["results"][name]
    everything = digests(config["X"])
    for epoch in range(config["params"]["max_epochs"]):
        mine, theirs = Counter(first["seen"][epoch]), Counter(second["seen"][epoch])
        assert sum(mine.values()) == sum(theirs.values()) == N_SAMPLES // WORLD
        assert mine + theirs == everything  # disjoint halves, every sample once
    assert first["seen"][0] != first["seen"][1]  # reshuffled each epoch


def test_every_process_resumes_a_finished_run_from_its_checkpoint(runs):
    finished = runs["results"]["mlp_cached"][0]
    for resumed in runs["results"]["mlp_cached_resumed"]:
        assert resumed["seen"] == []  # no epoch trained again
        assert len(resumed["n_batches"]) == 2
        for key, value in finished["state"].items():
            assert torch.equal(resumed["state"][key], value), key


def test_a_dataset_is_sharded_by_accelerate(runs):
    config, (first, second) = runs["configs"]["dataset"], runs["results"]["dataset"]
    X = config["X"].tensors[0].numpy()
    mine, theirs = Counter(first["seen"][0]), Counter(second["seen"][0])
    assert sum(mine.values()) == sum(theirs.values()) == N_SAMPLES // WORLD
    assert mine + theirs == digests(X)
    for key, value in first["state"].items():
        assert torch.equal(value, second["state"][key]), key
    assert first["proba"].shape == (N_SAMPLES, 10)
    np.testing.assert_array_equal(first["proba"], second["proba"])


def test_validation_split_is_sharded_for_training_only(runs):
    first, second = runs["results"]["mlp_uncached_valid"]
    n_train = N_SAMPLES * 3 // 4
    assert len(first["seen"][0]) == len(second["seen"][0]) == n_train // WORLD
    assert not set(first["seen"][0]) & set(second["seen"][0])
    np.testing.assert_array_equal(
        first["history"]["valid_loss"], second["history"]["valid_loss"]
    )


ALL = [
    "mlp_cached",
    "mlp_uncached_valid",
    "zoo_cached",
    "zoo_uncached",
    "zoo_bn_unseeded",
    "dataset",
    "zoo_bf16_channels_last",
    "zoo_dynamo",
]


@pytest.mark.parametrize("name", ALL)
def test_replicas_end_identical_and_unwrapped(runs, name):
    first, second = runs["results"][name]
    for part in ("state", "projectors"):
        assert first[part].keys() == second[part].keys()
        for key, value in first[part].items():
            assert torch.equal(value, second[part][key]), (part, key)
    # predictions after fit: the full answer on every process
    assert first["proba"].shape == (N_SAMPLES, 10)
    np.testing.assert_array_equal(first["proba"], second["proba"])
    assert first["history"]["train_loss"] == second["history"]["train_loss"]
    assert first["module_type"] == second["module_type"] != "FeatureModule"


@pytest.mark.parametrize(
    "name",
    ["mlp_cached", "mlp_uncached_valid", "zoo_cached", "zoo_uncached", "zoo_dynamo"],
)
def test_two_processes_equal_one_process_with_the_global_batch(runs, name):
    config, (result, _) = runs["configs"][name], runs["results"][name]
    reference = one_process(config)
    for key, value in reference.module_.state_dict().items():
        torch.testing.assert_close(result["state"][key], value, rtol=0, atol=1e-5)
    for key, value in reference.projectors_.state_dict().items():
        torch.testing.assert_close(result["projectors"][key], value, rtol=0, atol=1e-5)
    # the history holds every process's batch of each global batch
    steps = sum("train_loss" in batch for batch in reference.history[0]["batches"])
    assert result["n_train_batches"][0] == WORLD * steps
    for key, values in result["history"].items():
        np.testing.assert_allclose(
            values, reference.history[:, key], rtol=1e-5, atol=1e-6, err_msg=key
        )
    np.testing.assert_allclose(
        result["proba"], reference.predict_proba(config["X"]), atol=1e-5
    )


def test_only_one_checkpoint_is_written_whole(runs):
    folders = [entry for entry in os.scandir(runs["checkpoints"]) if entry.is_dir()]
    assert len(folders) == 1  # both processes agree on the run's folder
    names = sorted(os.listdir(folders[0].path))
    assert not [name for name in names if name.endswith(".tmp")]
    assert {"params.pt", "optimizer.pt", "projectors.pt", "history.json"} <= set(names)
    saved = torch.load(os.path.join(folders[0].path, "params.pt"), weights_only=True)
    final = runs["results"]["mlp_cached"][0]["state"]
    assert saved.keys() == final.keys()  # the bare student's names, no "module."
    for key, value in final.items():
        assert torch.equal(saved[key], value), key


@pytest.mark.parametrize(
    ("n", "drop_last", "sizes"),
    [
        (10, False, [[3, 2], [3, 2]]),  # 6 + 4: the last global batch split evenly
        (7, False, [[3], [3]]),  # 6 + 1: one sample cannot be shared out, dropped
        (10, True, [[3], [3]]),
        (12, False, [[3, 3], [3, 3]]),
    ],
)
def test_sharded_batches_cover_each_global_batch_once(n, drop_last, sizes):
    from projkd.parallel.sharding import ShardedArrayBatches
    from projkd.training.batching import ArrayBatches, ArrayDataset

    X = torch.arange(n, dtype=torch.float32)[:, None]
    dataset = ArrayDataset(X, torch.zeros(n, dtype=torch.long))
    single = ArrayBatches(dataset, np.arange(n), batch_size=6, shuffle=True, seed=3)
    order = torch.cat([batch for batch, _ in single]).flatten()
    shards = []
    for rank in range(2):
        batches = ArrayBatches(
            dataset,
            np.arange(n),
            batch_size=3,
            shuffle=True,
            drop_last=drop_last,
            seed=3,
        )
        sharded = ShardedArrayBatches(batches, num_replicas=2, rank=rank)
        shards.append([batch.flatten() for batch, _ in sharded])
        assert len(sharded) == len(shards[-1])
    assert [[len(b) for b in shard] for shard in shards] == sizes
    # global batch g is rank 0's part then rank 1's: the one-process order
    seen = torch.cat([torch.cat(pair) for pair in zip(*shards, strict=True)])
    torch.testing.assert_close(seen, order[: len(seen)])


def test_accelerator_bf16_with_channels_last_trains_alike_on_both_processes(runs):
    first, second = runs["results"]["zoo_bf16_channels_last"]
    assert first["train_dtypes"] == ["torch.bfloat16"]  # the accelerator's autocast
    assert first["channels_last"] and all(first["channels_last"])
    # one process in float32 with the global batch: bf16 moves the weights a
    # little, not the training
    reference = one_process(runs["configs"]["zoo_bf16_channels_last"])
    drift = max(
        float((first["state"][key] - value).abs().max())
        for key, value in reference.module_.state_dict().items()
    )
    assert 0 < drift < 0.01  # measured 8e-4
    np.testing.assert_allclose(
        first["history"]["train_loss"], reference.history[:, "train_loss"], rtol=0.005
    )
    assert first["history"]["train_loss"] == second["history"]["train_loss"]


def test_accelerator_compiles_the_ddp_wrapped_student(runs):
    first, _ = runs["results"]["zoo_dynamo"]
    assert first["wrapper"] == "OptimizedModule"  # torch.compile around DDP
    assert first["train_dtypes"] == ["torch.float32"]


@pytest.mark.parametrize(
    ("setting", "engine"),
    [
        (dict(mixed_precision="bf16"), "mixed_precision"),
        (dict(compile=True), "dynamo_backend"),
    ],
)
def test_estimator_precision_and_compile_are_refused_for_the_accelerator(
    digits, setting, engine
):
    from accelerate import Accelerator

    from projkd.parallel import AcceleratedProjectorDistiller

    X, _, y, _ = digits
    torch.manual_seed(0)
    est = AcceleratedProjectorDistiller(
        DigitsCNN(width=4).eval(),
        mlp(),
        accelerator=Accelerator(cpu=True),
        max_epochs=1,
        verbose=0,
        **setting,
    )
    with pytest.raises(ValueError, match=f"Accelerator\\({engine}=") as error:
        est.fit(X[:64], y[:64])
    assert not hasattr(est, "module_")  # refused before anything was built
    assert "set this on it instead" in str(error.value)


@pytest.mark.parametrize("name", ["zoo_augmented", "zoo_augmented_epoch_seed"])
def test_each_process_draws_its_own_augmentation(runs, name):
    # every process seeds alike (random_state, and EpochSeed at each epoch's
    # start); without a stream of its own, sample j of every slice would get
    # the same crop, flip or noise
    config, (first, second) = runs["configs"][name], runs["results"][name]
    assert len(first["draws"]) == len(second["draws"]) == 2 * N_SAMPLES // 64
    for mine, theirs in zip(first["draws"], second["draws"], strict=True):
        assert mine != theirs
    for part in ("state", "projectors"):  # and DDP still keeps them in step
        for key, value in first[part].items():
            assert torch.equal(value, second[part][key]), (part, key)
    everything = digests(config["X"])
    for epoch in range(2):  # while the shuffled order stays one for all
        mine, theirs = Counter(first["seen"][epoch]), Counter(second["seen"][epoch])
        assert mine + theirs == everything
