"""The one teacher net: :class:`projkd.teacher.TeacherNet` and the functions
and commands built on it."""

from __future__ import annotations

import argparse
from collections import namedtuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from projkd.data import load_digits
from projkd.models import DigitsCNN
from projkd.parallel import DataParallelMixin
from projkd.teacher import TeacherNet, train_teacher
from projkd.training.batching import ArrayBatches

Output = namedtuple("Output", ["logits", "hidden"])


class _Structured(nn.Module):
    """A classifier returning its logits in an object, as Hugging Face's do."""

    def __init__(self):
        super().__init__()
        self.net = DigitsCNN(width=4)

    def forward(self, x):
        return Output(self.net(x), None)


def _digits(n=96):
    X, y = load_digits()
    return X[:n], y[:n]


def _net(module, **kwargs):
    kwargs = {"max_epochs": 1, "train_split": None, "verbose": 0, **kwargs}
    return TeacherNet(module, **kwargs)


def test_arrays_are_sliced_in_batches_seeded_per_epoch():
    X, y = _digits()
    net = _net(DigitsCNN(width=4), batch_size=32, random_state=7).initialize()
    dataset = net.get_dataset(X, y)
    batches = net.get_iterator(dataset, training=True)
    assert isinstance(batches, ArrayBatches)  # what the data-parallel mixin shards
    assert batches.seed == 7 and batches.shuffle
    orders = [batches.epoch_order(), batches.epoch_order()]
    assert not np.array_equal(orders[0], orders[1])  # a new order every epoch
    # one epoch in the history, as in a run resumed from its checkpoint: the
    # order of an epoch depends on (random_state, epoch) alone
    net.history.new_epoch()
    resumed = net.get_iterator(dataset, training=True)
    np.testing.assert_array_equal(resumed.epoch_order(), orders[1])
    assert not net.get_iterator(dataset, training=False).shuffle


def test_a_dataset_goes_through_skorchs_loader():
    X, y = _digits()
    data = TensorDataset(torch.as_tensor(X), torch.as_tensor(y))
    net = _net(DigitsCNN(width=4)).fit(data, None)
    assert isinstance(
        net.get_iterator(net.get_dataset(data), training=True), DataLoader
    )
    assert net.predict_proba(data).shape == (len(y), 10)


def test_an_integer_random_state_makes_the_fit_reproducible():
    X, y = _digits()
    weights = []
    for _ in range(2):
        net = _net(DigitsCNN, module__width=4, max_epochs=2, random_state=3).fit(X, y)
        weights.append(torch.cat([p.flatten() for p in net.module_.parameters()]))
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)


def test_logits_are_read_from_a_structured_output():
    X, y = _digits()
    net = _net(_Structured(), mixed_precision="bf16").fit(X, y)
    assert np.isfinite(net.history[-1, "train_loss"])
    proba = net.predict_proba(X[:4])
    assert proba.dtype == np.float32 and np.allclose(proba.sum(1), 1, atol=1e-5)


def test_train_teacher_is_a_teacher_net():
    X, y = _digits()
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(x.shape)
            return x

    teacher = train_teacher(
        DigitsCNN(width=4),
        X,
        y,
        random_state=0,
        max_epochs=1,
        batch_size=64,
        train_transform=Probe(),  # a TeacherNet parameter
    )
    assert not teacher.training
    assert seen == [(64, 1, 8, 8), (32, 1, 8, 8)]  # training batches only


def test_one_accelerated_teacher_net_for_both_commands():
    from projkd.experiments import TeacherNet as Reexported
    from projkd.experiments.reproduction import runs
    from projkd.experiments.teacher import AcceleratedTeacherNet

    assert Reexported is TeacherNet
    assert runs.AcceleratedTeacherNet is AcceleratedTeacherNet
    assert issubclass(AcceleratedTeacherNet, DataParallelMixin)
    assert issubclass(AcceleratedTeacherNet, TeacherNet)


def test_reproduce_registers_on_the_subparsers_it_is_given():
    from projkd.experiments.reproduction import add_subcommand, run_command

    parser = argparse.ArgumentParser(prog="projkd")
    sub = add_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["reproduce", "--variants", "kd, fd1", "--seeds", "2"])
    assert args.command == "reproduce" and args.handler is run_command
    assert args.variants == ["kd", "fd1"] and args.seeds == 2
    assert sub.prog == "projkd reproduce"


def test_the_teacher_net_shares_the_distillers_batches_and_nonfinite_loss():
    import warnings

    from projkd.estimator.data import ArrayDataMixin
    from projkd.training.arrays import ArrayBatchesMixin

    # one mechanism: the distiller's data mixin and the teacher net share it
    assert issubclass(TeacherNet, ArrayBatchesMixin)
    assert issubclass(ArrayDataMixin, ArrayBatchesMixin)
    X, y = _digits()
    net = _net(DigitsCNN(width=4), data_device="cpu").initialize()
    assert net.get_dataset(X, y).device == torch.device("cpu")
    X_bad = X.copy()
    X_bad[:32] = np.nan  # the first batch's loss is NaN
    skipped = _net(
        DigitsCNN(width=4),
        batch_size=32,
        iterator_train__shuffle=False,
        nonfinite_loss="skip",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        skipped.fit(X_bad, y)
    assert skipped.history[-1, "train_skipped"] == 1
    assert np.isfinite(skipped.history[-1, "train_loss"])
    raised = _net(DigitsCNN(width=4), batch_size=32)
    try:
        raised.fit(X_bad, y)
    except FloatingPointError as error:
        assert "nonfinite_loss='skip'" in str(error)
    else:
        raise AssertionError("a NaN loss went unnoticed")
