"""What each loss weight switches on and off, the validation fold a teacher
estimator never sees, and skipped batches left out of the epoch's means."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback
from skorch.dataset import ValidSplit
from torch import nn

from projkd import ProjectorDistiller
from projkd.augment import RandomCropFlip
from projkd.losses import distillation_loss
from projkd.models import DigitsCNN

from .conftest import FAST


class NaNLogits(nn.Module):
    """A teacher with finite features and NaN logits (timm's feature API)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU())
        self.head = nn.Linear(16, 10)

    def forward_features(self, x):
        return self.body(x)

    def forward_head(self, features):
        return self.head(features) * float("nan")

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def test_a_zero_kd_weight_never_reads_the_teachers_logits(small_digits):
    X, y = small_digits
    est = ProjectorDistiller(
        NaNLogits().eval(), DigitsCNN, student__width=4, kd_weight=0.0, **FAST
    )
    est.fit(X, y)  # the NaN logits feed only the switched-off KD term
    assert est.history[:, "train_kd"] == [0.0, 0.0]
    assert all(np.isfinite(est.history[:, "train_loss"]))
    assert all(v > 0 for v in est.history[:, "train_feat"])


def test_without_a_feature_term_the_feature_widths_need_not_match(small_digits):
    X, y = small_digits
    teacher = DigitsCNN(width=8, n_features=64).eval()
    est = ProjectorDistiller(
        teacher,
        DigitsCNN,
        student__width=4,
        student__n_features=32,
        n_projectors=0,
        feature_weight=0.0,
        kd_weight=1.0,
        **FAST,
    )
    est.fit(X, y)  # 32 vs 64 wide: no feature is compared, so no refusal
    assert est.history[:, "train_feat"] == [0.0, 0.0]
    assert len(list(est.projectors_.parameters())) == 0


def test_a_cross_entropy_only_fit_runs_no_teacher_forward(small_digits):
    X, y = small_digits
    calls = []
    teacher = DigitsCNN(width=8).eval()
    first_layer = next(m for m in teacher.modules() if isinstance(m, nn.Conv2d))
    first_layer.register_forward_hook(lambda *args: calls.append(1))
    est = ProjectorDistiller(
        teacher,
        DigitsCNN,
        student__width=4,
        feature_weight=0.0,
        kd_weight=0.0,
        train_transform=RandomCropFlip(padding=1),  # no cache: it would run
        **FAST,
    )
    est.fit(X, y)
    assert len(calls) == 1  # the probe that sizes the networks, nothing more
    kd = ProjectorDistiller(
        teacher, DigitsCNN, student__width=4, train_transform=RandomCropFlip(1), **FAST
    )
    kd.fit(X, y)
    assert len(calls) > 2  # the same fit with a feature term does run it


def test_a_switched_off_term_is_not_computed():
    logits = torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 0])
    nan = torch.full((4, 3), float("nan"))
    loss, terms = distillation_loss(
        logits,
        y,
        teacher_logits=nan,
        projected=None,
        teacher_features=None,
        kd_weight=0.0,
        feature_weight=0.0,
    )
    assert torch.isfinite(loss) and float(terms["kd"]) == float(terms["feat"]) == 0
    assert torch.equal(loss, torch.nn.functional.cross_entropy(logits, y))
    with pytest.raises(ValueError, match="teacher_logits is needed when kd_weight"):
        distillation_loss(
            logits,
            y,
            teacher_logits=None,
            projected=None,
            teacher_features=None,
            kd_weight=1.0,
            feature_weight=0.0,
        )


class Rows(Callback):
    """Collects the rows a net's batches carry (training or validation)."""

    def __init__(self, training: bool) -> None:
        self.training = training

    def on_train_begin(self, net, **kwargs):
        self.seen_ = []

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if training == self.training:
            x = batch[0]
            x = getattr(x, "inputs", x)  # a batch with cached teacher outputs
            self.seen_.append(x.detach().cpu().reshape(len(x), -1).numpy())


def teacher_net(**params):
    """An unfitted skorch teacher: the distiller fits it on each training fold."""
    return NeuralNetClassifier(
        DigitsCNN,
        module__width=4,
        criterion=nn.CrossEntropyLoss,
        max_epochs=1,
        train_split=None,
        verbose=0,
        **params,
    )


def _row_ids(arrays, X):
    index = {row.tobytes(): i for i, row in enumerate(X.reshape(len(X), -1))}
    return {index[row.tobytes()] for a in arrays for row in a}


def test_a_teacher_estimator_never_sees_the_validation_fold(digits):
    X, y = digits[0][:200], digits[2][:200]
    teacher_rows = Rows(training=True)
    teacher = teacher_net(batch_size=64, callbacks=[("rows", teacher_rows)])
    valid_rows = Rows(training=False)
    train_rows = Rows(training=True)
    est = ProjectorDistiller(
        teacher,
        DigitsCNN,
        student__width=4,
        max_epochs=1,
        batch_size=64,
        verbose=0,
        train_split=ValidSplit(4, stratified=False),  # the last quarter validates
        callbacks=[("valid_rows", valid_rows), ("train_rows", train_rows)],
    )
    est.fit(X, y)
    fitted_rows = dict(est.teacher_estimator_.callbacks_)["rows"]
    seen_by_teacher = _row_ids(fitted_rows.seen_, X)
    validation = _row_ids(valid_rows.seen_, X)
    assert len(seen_by_teacher) == 150 and len(validation) == 50
    assert not seen_by_teacher & validation
    assert seen_by_teacher == _row_ids(train_rows.seen_, X)  # the same split


def test_an_unseeded_float_split_is_drawn_once(digits):
    X, y = digits[0][:200], digits[2][:200]
    teacher = teacher_net(callbacks=[("rows", Rows(training=True))])
    valid_rows = Rows(training=False)
    est = ProjectorDistiller(
        teacher,
        DigitsCNN,
        student__width=4,
        max_epochs=1,
        verbose=0,
        train_split=ValidSplit(0.25),  # reshuffles on every call
        callbacks=[("valid_rows", valid_rows)],
    )
    est.fit(X, y)
    seen = _row_ids(dict(est.teacher_estimator_.callbacks_)["rows"].seen_, X)
    assert not seen & _row_ids(valid_rows.seen_, X)
    assert len(seen) + len(_row_ids(valid_rows.seen_, X)) == 200


class PoisonBatches(Callback):
    """Makes the student's loss NaN on the given training batches of epoch 1."""

    def __init__(self, batches):
        self.batches = batches

    def on_batch_begin(self, net, training=False, **kwargs):
        index = len(net.history[-1]["batches"])
        if training and len(net.history) == 1 and index in self.batches:
            self.saved_ = copy.deepcopy(net.module_.fc.bias.detach())
            with torch.no_grad():
                net.module_.fc.bias.fill_(float("nan"))

    def on_batch_end(self, net, training=False, **kwargs):
        if hasattr(self, "saved_"):
            with torch.no_grad():
                net.module_.fc.bias.copy_(self.saved_)
            del self.saved_


def test_skipped_batches_are_left_out_of_the_epochs_means(teacher, digits):
    X, y = digits[0][:1000], digits[2][:1000]  # 20 batches of 50
    skipped = {1, 2, 4, 6, 8, 10, 12, 14, 16}
    est = ProjectorDistiller(
        teacher,
        DigitsCNN,
        student__width=4,
        nonfinite_loss="skip",
        callbacks=[PoisonBatches(skipped)],
        **{**FAST, "batch_size": 50, "max_epochs": 1},
    )
    with pytest.warns(RuntimeWarning, match="Skipped a training batch"):
        est.fit(X, y)
    rows = est.history[-1]["batches"]
    assert len(rows) == 20 and est.history[-1, "train_skipped"] == 9
    kept = [row for row in rows if "train_loss" in row]
    assert len(kept) == 11
    expected = np.average(
        [row["train_loss"] for row in kept],
        weights=[r["train_batch_size"] for r in kept],
    )
    assert est.history[-1, "train_loss"] == pytest.approx(expected)
    assert all(row["train_loss"] > 0 for row in kept)
    for term in ("ce", "acc"):  # no skipped batch drags a mean down
        assert est.history[-1, f"train_{term}"] == pytest.approx(
            np.average([r[f"train_{term}"] for r in kept], weights=[50] * 11)
        )


def test_a_feature_term_turned_on_after_fit_rebuilds_or_is_refused(small_digits):
    X, y = small_digits
    est = ProjectorDistiller(
        DigitsCNN(width=8).eval(),
        DigitsCNN,
        student__width=4,
        feature_weight=0.0,
        kd_weight=1.0,
        warm_start=True,
        **FAST,
    ).fit(X, y)
    assert len(est.projectors_) == 0
    # set_params rebuilds the networks it shapes, as skorch does for a module
    est.set_params(feature_weight=25.0)
    assert len(est.projectors_) == est.n_projectors
    est.fit(X, y)
    assert est.history[-1, "train_feat"] > 0
    # a bare attribute change cannot rebuild them: the next fit refuses
    est.set_params(feature_weight=0.0).fit(X, y)
    est.feature_weight = 25.0
    with pytest.raises(ValueError, match="initialised without them"):
        est.fit(X, y)


def test_the_split_of_a_fit_is_not_pickled(digits):
    import pickle

    X, y = digits[0][:200], digits[2][:200]
    teacher = teacher_net()
    est = ProjectorDistiller(
        teacher,
        DigitsCNN,
        student__width=4,
        max_epochs=1,
        verbose=0,
        train_split=ValidSplit(4, stratified=False),
    ).fit(X, y)
    assert not hasattr(est, "fit_split_")
    assert "fit_split_" not in pickle.loads(pickle.dumps(est)).__dict__
