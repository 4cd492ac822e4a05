"""The estimator's ``logit_loss``: shortcuts, loss objects with scikit-learn
parameters, a user's callable, DKD's warm-up and the terms in the history."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from projkd import ProjectorDistiller
from projkd.losses import (
    DISTLoss,
    DKDLoss,
    KDLoss,
    distillation_loss,
    kd_loss,
    resolve_logit_loss,
)
from projkd.models import DigitsCNN

from .conftest import FAST

LOGIT = dict(FAST, kd_weight=1.0, feature_weight=0.0, n_projectors=0, random_state=0)


def distiller(teacher, **params):
    return ProjectorDistiller(
        teacher, DigitsCNN, student__width=4, **{**LOGIT, **params}
    )


# ------------------------------------------------------------ loss objects
def test_loss_objects_have_parameters_clone_and_pickle():
    loss = DKDLoss(beta=6.0)
    assert loss.get_params() == {
        "alpha": 1.0,
        "beta": 6.0,
        "standardize": False,
        "warmup": 20 / 240,
    }
    assert loss.set_params(alpha=0.5) is loss and loss.alpha == 0.5
    copy = clone(loss)
    assert copy is not loss and copy == loss
    assert pickle.loads(pickle.dumps(loss)) == loss
    assert (
        repr(DISTLoss(gamma=2.0)) == "DISTLoss(beta=1.0, gamma=2.0, standardize=False)"
    )
    assert KDLoss().get_params() == {"standardize": False}
    with pytest.raises(ValueError, match=r"'gamma' for DKDLoss; its parameters are"):
        loss.set_params(gamma=1.0)


def test_dkd_with_beta_0_is_kd_on_the_target_non_target_split():
    zs, zt, y = 2 * torch.randn(6, 5), 2 * torch.randn(6, 5), torch.randint(5, (6,))
    T = 3.0
    got, parts = DKDLoss(alpha=1.0, beta=0.0)(zs, zt, y, temperature=T)

    def binary(z):  # logits whose softmax at T is (p_target, 1 - p_target)
        target = torch.nn.functional.one_hot(y, 5).bool()
        rest = torch.logsumexp(z[~target].reshape(6, 4) / T, dim=1)
        return T * torch.stack([z[target] / T, rest], dim=1)

    expected = kd_loss(binary(zs), binary(zt), temperature=T)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(parts["tckd"], expected)


def test_dkd_warm_up_is_a_fraction_of_the_run():
    loss = DKDLoss()  # 20 of 240 epochs
    assert [loss.schedule(e, 240) for e in (1, 10, 20, 21)] == [0.05, 0.5, 1.0, 1.0]
    assert [loss.schedule(e, 24) for e in (1, 2, 3)] == [0.5, 1.0, 1.0]
    assert DKDLoss(warmup=0.0).schedule(1, 10) == 1.0


# ------------------------------------------------------------- resolution
def test_a_logit_loss_other_than_kd_needs_a_kd_weight(small_digits, teacher):
    X, y = small_digits
    for logit_loss in ("dkd", DISTLoss(), lambda s, t, y: (kd_loss(s, t), {})):
        est = distiller(teacher, logit_loss=logit_loss, kd_weight=0.0)
        with pytest.raises(ValueError, match="with kd_weight=0 does nothing"):
            est.fit(X, y)
        assert not est.initialized_  # refused before any training
    distiller(
        teacher, logit_loss="kd", kd_weight=0.0, feature_weight=1.0, n_projectors=1
    ).fit(X, y)


def test_bad_logit_losses_are_refused_before_training(small_digits, teacher):
    X, y = small_digits
    with pytest.raises(ValueError, match="'logit_loss' parameter"):
        distiller(teacher, logit_loss="dkdd").fit(X, y)
    with pytest.raises(
        ValueError, match="DKDLoss's beta must be a number >= 0, got -1"
    ):
        distiller(teacher, logit_loss=DKDLoss(beta=-1)).fit(X, y)
    with pytest.raises(ValueError, match=r"warmup must be in \[0, 1.0\], got 2"):
        distiller(teacher, logit_loss=DKDLoss(warmup=2)).fit(X, y)


def test_kd_shortcut_is_the_kd_term_bit_for_bit():
    zs, zt, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(10, (8,))
    common = dict(
        teacher_logits=zt,
        projected=None,
        teacher_features=None,
        ce_weight=0.1,
        kd_weight=0.9,
        feature_weight=0.0,
        temperature=3.0,
    )
    before, terms_before = distillation_loss(zs, y, **common)  # no logit_loss
    bound = resolve_logit_loss("kd", kd_weight=0.9, temperature=3.0)
    after, terms_after = distillation_loss(zs, y, **common, logit_loss=bound)
    assert torch.equal(before, after)
    assert terms_before.keys() == terms_after.keys()
    assert all(torch.equal(terms_before[k], terms_after[k]) for k in terms_before)


class Recorder:
    """A logit loss that records what it is called with."""

    def __init__(self):
        self.calls = []

    def __call__(self, student_logits, teacher_logits, y, temperature):
        self.calls.append((student_logits.detach(), teacher_logits, y, temperature))
        return kd_loss(student_logits, teacher_logits, temperature=temperature), {}


class RecordingKD(KDLoss):
    calls: list = []

    def __call__(self, student_logits, teacher_logits, y, *, temperature=4.0):
        self.calls.append((student_logits.detach(), teacher_logits, y, temperature))
        return super().__call__(
            student_logits, teacher_logits, y, temperature=temperature
        )


def test_a_callable_receives_what_the_loss_objects_receive(small_digits, teacher):
    X, y = small_digits
    callable_loss, object_loss = Recorder(), RecordingKD()
    object_loss.calls = []
    runs = {}
    for name, loss in (("callable", callable_loss), ("object", object_loss)):
        est = distiller(teacher, logit_loss=loss, temperature=2.5, max_epochs=1)
        runs[name] = est.fit(X, y).history[-1, "train_loss"]
    assert len(callable_loss.calls) == len(object_loss.calls) > 1
    for got, want in zip(callable_loss.calls, object_loss.calls, strict=True):
        for a, b in zip(got[:3], want[:3], strict=True):
            torch.testing.assert_close(a, b)
        assert got[3] == want[3] == 2.5
    assert runs["callable"] == runs["object"]  # the same training
    # a callable without a temperature argument is called with three tensors
    seen = []
    three = lambda s, t, labels: (seen.append(labels) or kd_loss(s, t), {})  # noqa: E731
    distiller(teacher, logit_loss=three, max_epochs=1).fit(X, y)
    assert seen and all(torch.is_tensor(labels) for labels in seen)


def test_a_callables_terms_are_recorded_and_may_not_shadow_the_objectives(
    small_digits, teacher
):
    X, y = small_digits

    def with_parts(s, t, labels):
        kd = kd_loss(s, t)
        return kd, {"half": kd / 2}

    est = distiller(teacher, logit_loss=with_parts, max_epochs=1).fit(X, y)
    batch = est.history[-1, "batches", 0]
    assert batch["train_half"] == pytest.approx(batch["train_kd"] / 2)
    with pytest.raises(ValueError, match=r"terms named \['feat'\]"):
        distiller(teacher, logit_loss=lambda s, t, y: (kd_loss(s, t), {"feat": 0})).fit(
            X, y
        )


# ------------------------------------------------- the estimator's history
def test_dkd_and_dist_record_their_parts_and_dkd_warms_up(small_digits, teacher):
    X, y = small_digits
    est = distiller(
        teacher,
        logit_loss=DKDLoss(beta=2.0, warmup=1.0),  # over all 4 epochs
        max_epochs=4,
        ce_weight=0.5,
        kd_weight=2.0,
    ).fit(X, y)
    for epoch, factor in zip(est.history, (0.25, 0.5, 0.75, 1.0), strict=True):
        assert epoch["train_tckd"] > 0 and epoch["train_nckd"] > 0
        for batch in epoch["batches"]:
            kd = batch["train_tckd"] + 2.0 * batch["train_nckd"]
            assert batch["train_kd"] == pytest.approx(kd, rel=1e-5)
            expected = 0.5 * batch["train_ce"] + 2.0 * factor * kd
            assert batch["train_loss"] == pytest.approx(expected, rel=1e-5)
    est = distiller(teacher, logit_loss="dist").fit(X, y)
    assert est.history[-1, "train_inter"] > 0 and est.history[-1, "train_intra"] > 0


def test_the_logit_projector_carries_each_logit_loss(small_digits, teacher):
    X, y = small_digits
    for logit_loss in ("dkd", "dist"):
        est = distiller(teacher, logit_loss=logit_loss, logit_projector=True).fit(X, y)
        weight = est.logit_projector_.weight.detach()
        assert not torch.equal(weight, torch.eye(10))  # it trained
        # predictions use the raw logits, not the projected ones
        with torch.no_grad():
            raw = est.module_.eval()(torch.as_tensor(X[:5])).softmax(dim=1).numpy()
        np.testing.assert_allclose(est.predict_proba(X[:5]), raw, rtol=1e-5)


# ----------------------------------------------------- scikit-learn's API
def test_logit_loss_options_route_through_get_params_and_set_params(
    small_digits, teacher
):
    dkd = DKDLoss(beta=6.0)
    est = distiller(teacher, logit_loss=dkd)
    assert est.get_params()["logit_loss__beta"] == 6.0
    est.set_params(logit_loss__beta=2.0, logit_loss__alpha=0.5)
    # options are parameters of the estimator: the user's object is untouched
    assert dkd == DKDLoss(beta=6.0) and est.logit_loss is dkd
    params = est.get_params()
    assert (params["logit_loss__beta"], params["logit_loss__alpha"]) == (2.0, 0.5)
    copy = clone(est)
    assert copy.get_params()["logit_loss__beta"] == 2.0
    est.set_params(max_epochs=1).fit(*small_digits)
    assert est.logit_loss_.loss == DKDLoss(alpha=0.5, beta=2.0)
    # a shortcut takes its options from the constructor too
    est = distiller(teacher, logit_loss="dist", logit_loss__gamma=3.0, max_epochs=1)
    assert est.fit(*small_digits).logit_loss_.loss == DISTLoss(gamma=3.0)
    with pytest.raises(ValueError, match="logit_loss__tau"):
        distiller(teacher, logit_loss="dkd", logit_loss__tau=1.0).fit(*small_digits)
    with pytest.raises(ValueError, match="has no options to set"):
        distiller(
            teacher, logit_loss=lambda s, t, y: (s.sum(), {}), logit_loss__beta=1.0
        ).fit(*small_digits)


def test_grid_search_over_logit_losses_and_the_logit_projector(digits, teacher):
    X_train, _, y_train, _ = digits
    X, y = X_train[:240], y_train[:240]
    grid = {
        "logit_loss": ["kd", DKDLoss(beta=6.0), "dist"],
        "logit_projector": [False, True],
    }
    search = GridSearchCV(distiller(teacher, max_epochs=1), grid, cv=2).fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert len(scores) == 6 and np.isfinite(scores).all()
    assert search.best_estimator_.predict(X[:3]).shape == (3,)


def test_a_grid_with_options_only_one_loss_has(small_digits, teacher):
    X, y = small_digits
    dkd = DKDLoss()
    grid = [
        {"logit_loss": [dkd], "logit_loss__alpha": [0.5, 2.0]},
        {"logit_loss": [DISTLoss()], "logit_loss__gamma": [3.0]},
    ]
    search = GridSearchCV(distiller(teacher, max_epochs=1), grid, cv=2, refit=False)
    search.fit(X, y)
    assert len(search.cv_results_["params"]) == 3
    assert dkd == DKDLoss()  # each candidate had its own copy
