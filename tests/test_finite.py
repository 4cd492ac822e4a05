"""No host read in a training step: non-finite losses decided on the device
by a fused optimizer's ``found_inf``, the records read once per epoch."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback
from torch import nn

from projkd import NonFiniteLossError, ProjectorDistiller
from projkd.models import DigitsCNN
from projkd.teacher.training import TeacherNet
from projkd.training.finite import takes_found_inf

# the recipe's optimizer (experiments.recipes: CIFAR-100)
SGD = dict(
    optimizer=torch.optim.SGD,
    optimizer__momentum=0.9,
    optimizer__weight_decay=5e-4,
    lr=0.05,
)
READS = ("item", "tolist", "__bool__", "__float__", "__int__", "numpy")


def make(teacher, **params):
    kwargs = dict(
        student=DigitsCNN,
        student__width=4,
        max_epochs=2,
        train_split=None,
        verbose=0,
        random_state=0,
        **SGD,
    )
    kwargs.update(params)
    return ProjectorDistiller(teacher, **kwargs)


def _count_reads(patch):
    calls = {"n": 0}
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            calls["n"] += 1
            return _original(self, *args, **kwargs)

        patch.setattr(torch.Tensor, name, counted)
    return calls


def _reads_of_fits(monkeypatch, fit, X, y):
    counts = []
    for batch_size in (100, 25):  # 3 and 12 batches an epoch
        with monkeypatch.context() as patch:
            calls = _count_reads(patch)
            fit(batch_size, X, y)
            counts.append(calls["n"])
    return counts


def test_distiller_fit_reads_no_value_per_step(small_digits, teacher, monkeypatch):
    def fit(batch_size, X, y):
        est = make(teacher, batch_size=batch_size, n_projectors=3, kd_weight=0.5)
        est.fit(X, y)
        assert len(est.history[-1, "batches"]) == len(X) // batch_size
        assert takes_found_inf(est.optimizer_)  # fused SGD, stepped

    counts = _reads_of_fits(monkeypatch, fit, *small_digits)
    assert counts[0] == counts[1], counts


def test_teacher_net_fit_reads_no_value_per_step(small_digits, monkeypatch):
    def fit(batch_size, X, y):
        net = TeacherNet(
            DigitsCNN(width=4),
            max_epochs=2,
            batch_size=batch_size,
            train_split=None,
            verbose=0,
            random_state=0,
            **SGD,
        ).fit(X, y)
        assert np.isfinite(net.history[-1, "train_loss"])

    counts = _reads_of_fits(monkeypatch, fit, *small_digits)
    assert counts[0] == counts[1], counts


class TeacherCalls(Callback):
    def on_train_begin(self, net, **kwargs):
        self.calls = []
        # a layer's hook: the teacher's own forward may be bypassed for
        # forward_features/forward_head
        conv = next(m for m in net.teacher_.modules() if isinstance(m, nn.Conv2d))
        self.handle = conv.register_forward_hook(lambda *args: self.calls.append(1))

    def on_train_end(self, net, **kwargs):
        self.handle.remove()


def test_a_ce_only_fit_runs_no_teacher_forward(small_digits, teacher):
    spy = TeacherCalls()
    est = make(
        teacher, kd_weight=0, feature_weight=0, cache_teacher=False, callbacks=[spy]
    )
    est.fit(*small_digits)
    assert spy.calls == []
    spy_kd = TeacherCalls()
    make(teacher, kd_weight=1.0, cache_teacher=False, callbacks=[spy_kd]).fit(
        *small_digits
    )
    assert spy_kd.calls  # the spy sees a teacher that does run


class Poison(Callback):
    """NaN in the classifier's bias before one training batch."""

    def __init__(self, epoch, batch, heal=False):
        self.epoch, self.batch, self.heal = epoch, batch, heal

    def on_batch_begin(self, net, training=False, **kwargs):
        batches = len(net.history[-1]["batches"])
        if training and len(net.history) == self.epoch and batches == self.batch:
            self.saved_ = copy.deepcopy(net.module_.state_dict())
            self.bias_ = net.module_.fc.bias.detach().clone()
            with torch.no_grad():
                net.module_.fc.bias.fill_(float("nan"))

    def on_batch_end(self, net, training=False, **kwargs):
        if self.heal and hasattr(self, "bias_") and not hasattr(self, "after_"):
            self.after_ = copy.deepcopy(net.module_.state_dict())
            with torch.no_grad():
                net.module_.fc.bias.copy_(self.bias_)


def _weights(state):
    return {k: v for k, v in state.items() if "running" not in k and "num_" not in k}


def test_raise_on_the_device_keeps_the_last_finite_weights(small_digits, teacher):
    poison = Poison(epoch=2, batch=2)
    est = make(teacher, batch_size=50, callbacks=[poison], feature_weight=0)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, batch 2 \(ce = nan\)"):
        est.fit(*small_digits)
    state = _weights(est.module_.state_dict())
    for key, value in _weights(poison.saved_).items():
        if key != "fc.bias":  # later batches of the epoch did not step either
            assert torch.equal(state[key], value), key


@pytest.mark.parametrize("fused", [True, False])
def test_skip_on_the_device_equals_the_host_read(small_digits, teacher, fused):
    """The device flag (fused SGD) and the per-step read (foreach SGD) skip
    the same batch and leave the same weights, warning alike."""
    poison = Poison(epoch=1, batch=3, heal=True)
    kind = {"optimizer__fused": True} if fused else {"optimizer__foreach": True}
    est = make(
        teacher,
        batch_size=50,
        nonfinite_loss="skip",
        callbacks=[poison],
        feature_weight=0,
        **kind,
    )
    with pytest.warns(RuntimeWarning, match=r"epoch 1, batch 3 \(ce = nan\)"):
        est.fit(*small_digits)
    assert takes_found_inf(est.optimizer_) is fused
    for key, value in _weights(poison.saved_).items():
        if key != "fc.bias":  # the skipped step moved nothing
            assert torch.equal(_weights(poison.after_)[key], value), key
    assert est.history[:, "train_skipped"] == [1, 0]
    assert np.isfinite(est.history[:, "train_loss"]).all()
    rows = est.history[0, "batches"]
    assert "train_loss" not in rows[2] and "train_loss" in rows[3]


def test_the_fused_default_yields_to_explicit_choices(small_digits, teacher):
    X, y = small_digits
    assert make(teacher, max_epochs=1).fit(X, y).optimizer_.defaults["fused"]
    est = make(teacher, max_epochs=1, optimizer__foreach=True).fit(X, y)
    assert not est.optimizer_.defaults["fused"]
    adam = ProjectorDistiller(
        teacher, DigitsCNN, optimizer=torch.optim.Adam, max_epochs=1, verbose=0
    )
    assert takes_found_inf(adam.fit(X, y).optimizer_)  # no momentum buffers
