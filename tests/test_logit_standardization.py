"""Logit standardization (Sun et al., CVPR 2024, arXiv:2403.01427): the pure
functions against the authors' code, the invariance it exists for, and the
``standardize`` parameter of the logit-loss objects."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone

from projkd.errors import InputError
from projkd.losses import (
    DISTLoss,
    DKDLoss,
    KDLoss,
    dist_loss,
    dist_parts,
    dkd_loss,
    dkd_parts,
    kd_loss,
    resolve_logit_loss,
    standardize_logits,
)


# ------------------------------------------------- the authors' code, as is
# sunshangquan/logit-standardization-KD, mdistiller/distillers/KD.py and
# DKD.py (commit 6083e2de): `normalize`, `kd_loss`, `dkd_loss` with their
# `logit_stand` switch on, written as they compute.
def authors_normalize(logit):
    mean = logit.mean(dim=-1, keepdims=True)
    stdv = logit.std(dim=-1, keepdims=True)
    return (logit - mean) / (1e-7 + stdv)


def authors_kd_loss(logits_student_in, logits_teacher_in, temperature):
    logits_student = authors_normalize(logits_student_in)
    logits_teacher = authors_normalize(logits_teacher_in)
    log_pred_student = F.log_softmax(logits_student / temperature, dim=1)
    pred_teacher = F.softmax(logits_teacher / temperature, dim=1)
    loss_kd = F.kl_div(log_pred_student, pred_teacher, reduction="none").sum(1).mean()
    loss_kd *= temperature**2
    return loss_kd


def cat_mask(t, mask1, mask2):
    t1 = (t * mask1).sum(dim=1, keepdims=True)
    t2 = (t * mask2).sum(1, keepdims=True)
    return torch.cat([t1, t2], dim=1)


def authors_dkd_parts(logits_student_in, logits_teacher_in, target, temperature):
    logits_student = authors_normalize(logits_student_in)
    logits_teacher = authors_normalize(logits_teacher_in)
    gt_mask = torch.zeros_like(logits_student).scatter_(1, target[:, None], 1).bool()
    other_mask = torch.ones_like(logits_student).scatter_(1, target[:, None], 0).bool()
    pred_student = F.softmax(logits_student / temperature, dim=1)
    pred_teacher = F.softmax(logits_teacher / temperature, dim=1)
    pred_student = cat_mask(pred_student, gt_mask, other_mask)
    pred_teacher = cat_mask(pred_teacher, gt_mask, other_mask)
    log_pred_student = torch.log(pred_student)
    tckd_loss = (
        F.kl_div(log_pred_student, pred_teacher, reduction="sum")
        * (temperature**2)
        / target.shape[0]
    )
    pred_teacher_part2 = F.softmax(
        logits_teacher / temperature - 1000.0 * gt_mask, dim=1
    )
    log_pred_student_part2 = F.log_softmax(
        logits_student / temperature - 1000.0 * gt_mask, dim=1
    )
    nckd_loss = (
        F.kl_div(log_pred_student_part2, pred_teacher_part2, reduction="sum")
        * (temperature**2)
        / target.shape[0]
    )
    return tckd_loss, nckd_loss


def dist_reference(student_logits, teacher_logits, tau):
    """DIST as torchdistill's ``DISTLoss`` computes it (the LS repository has
    no DIST), on the authors' standardized logits: DIST on Z(z)."""

    def pearson(a, b):
        return F.cosine_similarity(
            a - a.mean(1).unsqueeze(1), b - b.mean(1).unsqueeze(1), eps=1e-8
        )

    y_s = (authors_normalize(student_logits) / tau).softmax(dim=1)
    y_t = (authors_normalize(teacher_logits) / tau).softmax(dim=1)
    inter = tau**2 * (1 - pearson(y_s, y_t).mean())
    intra = tau**2 * (1 - pearson(y_s.T, y_t.T).mean())
    return inter, intra


def logits(n=16, c=10, scale=3.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    student = scale * torch.randn(n, c, generator=generator) + 2.0
    teacher = 2 * scale * torch.randn(n, c, generator=generator) - 1.0
    y = torch.randint(c, (n,), generator=generator)
    return student, teacher, y


# ----------------------------------------------------- the pure functions
def test_standardize_logits_is_the_authors_normalize():
    z = 7.0 * torch.randn(32, 100) + 3.0
    torch.testing.assert_close(standardize_logits(z), authors_normalize(z))
    z3 = torch.randn(2, 5, 7)  # any leading shape, classes last
    torch.testing.assert_close(standardize_logits(z3), authors_normalize(z3))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 50), st.floats(0.01, 100.0))
def test_standardized_rows_have_mean_0_and_unbiased_std_1(seed, n_classes, scale):
    generator = torch.Generator().manual_seed(seed)
    z = scale * torch.randn(6, n_classes, dtype=torch.float64, generator=generator)
    standardized = standardize_logits(z)
    torch.testing.assert_close(
        standardized.mean(1), torch.zeros(6, dtype=torch.float64), atol=1e-9, rtol=0
    )
    # the unbiased std (C - 1) is 1 but for the 1e-7 added to the divisor;
    # dividing by the biased one would give sqrt(C / (C - 1)) instead
    spread = z.std(1)
    torch.testing.assert_close(standardized.std(1), spread / (1e-7 + spread))
    if scale >= 1.0:
        assert torch.allclose(standardized.std(1), torch.ones(6).double(), atol=1e-6)


def test_standardize_logits_needs_two_classes():
    with pytest.raises(ValueError, match="at least 2 classes"):
        standardize_logits(torch.ones(4, 1))


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kd_with_standardize_equals_the_authors_kd(temperature):
    student, teacher, _ = logits()
    got = kd_loss(student, teacher, temperature=temperature, standardize=True)
    torch.testing.assert_close(got, authors_kd_loss(student, teacher, temperature))
    # the switch does something: plain KD on these logits differs
    plain = kd_loss(student, teacher, temperature=temperature)
    assert not torch.allclose(got, plain, rtol=1e-2)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_dkd_with_standardize_equals_the_authors_dkd(temperature):
    student, teacher, y = logits(c=100)
    tckd, nckd = authors_dkd_parts(student, teacher, y, temperature)
    parts = dkd_parts(student, teacher, y, temperature=temperature, standardize=True)
    torch.testing.assert_close(parts, (tckd, nckd))
    # the authors' recipe with LS: alpha and beta nine times DKD's
    got = dkd_loss(
        student,
        teacher,
        y,
        alpha=9.0,
        beta=72.0,
        temperature=temperature,
        standardize=True,
    )
    torch.testing.assert_close(got, 9.0 * tckd + 72.0 * nckd)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dist_with_standardize_is_dist_on_standardized_logits(temperature):
    student, teacher, _ = logits()
    inter, intra = dist_reference(student, teacher, temperature)
    parts = dist_parts(student, teacher, temperature=temperature, standardize=True)
    torch.testing.assert_close(parts, (inter, intra))
    got = dist_loss(
        student, teacher, beta=0.5, gamma=2.0, temperature=temperature, standardize=True
    )
    torch.testing.assert_close(got, 0.5 * inter + 2.0 * intra)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from(["student", "teacher"]),
    st.floats(-50.0, 50.0),
    st.floats(0.1, 20.0),
)
def test_ls_kd_ignores_each_networks_shift_and_scale(seed, network, shift, scale):
    """The point of logit standardization: a student need not match the
    teacher's logit range, only its relative logits, per sample."""
    student, teacher, _ = logits(n=8, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    shifts = shift * torch.rand(8, 1, generator=generator)  # per sample
    scales = scale * (0.5 + torch.rand(8, 1, generator=generator))  # positive
    moved_student, moved_teacher = student, teacher
    if network == "student":
        moved_student = scales * student + shifts
    else:
        moved_teacher = scales * teacher + shifts
    reference = kd_loss(student, teacher, temperature=2.0, standardize=True)
    moved = kd_loss(moved_student, moved_teacher, temperature=2.0, standardize=True)
    torch.testing.assert_close(moved, reference, rtol=1e-4, atol=1e-5)


def test_plain_kd_is_not_invariant_to_scale():
    """What the invariance test above rules out: without LS, scaling the
    teacher's logits changes KD."""
    student, teacher, _ = logits(n=8)
    assert not torch.allclose(
        kd_loss(student, 3 * teacher, temperature=2.0),
        kd_loss(student, teacher, temperature=2.0),
        rtol=1e-2,
    )


# ------------------------------------------------------------ the objects
@pytest.mark.parametrize("cls", [KDLoss, DKDLoss, DISTLoss])
def test_standardize_is_a_parameter_of_each_logit_loss(cls):
    loss = cls(standardize=True)
    assert loss.get_params()["standardize"] is True
    assert cls().get_params()["standardize"] is False
    assert "standardize=True" in repr(loss)
    assert loss != cls() and cls() == cls()
    assert loss.set_params(standardize=False) is loss and loss == cls()
    copy = clone(cls(standardize=True))
    assert copy.standardize is True and copy == cls(standardize=True)
    assert pickle.loads(pickle.dumps(copy)) == copy


def test_kd_loss_object_is_still_kd_with_no_arguments():
    assert KDLoss() == KDLoss()
    assert repr(KDLoss()) == "KDLoss(standardize=False)"
    bound = resolve_logit_loss("kd", kd_weight=1.0, temperature=4.0)
    assert bound.loss == KDLoss() and bound.temperature == 4.0


def test_the_objects_pass_standardize_to_the_functions():
    student, teacher, y = logits()
    got, terms = KDLoss(standardize=True)(student, teacher, y, temperature=2.0)
    torch.testing.assert_close(got, authors_kd_loss(student, teacher, 2.0))
    assert terms == {}
    got, terms = DKDLoss(alpha=2.0, beta=3.0, standardize=True)(
        student, teacher, y, temperature=2.0
    )
    tckd, nckd = authors_dkd_parts(student, teacher, y, 2.0)
    torch.testing.assert_close(got, 2.0 * tckd + 3.0 * nckd)
    torch.testing.assert_close((terms["tckd"], terms["nckd"]), (tckd, nckd))
    got, terms = DISTLoss(standardize=True)(student, teacher, y, temperature=4.0)
    inter, intra = dist_reference(student, teacher, 4.0)
    torch.testing.assert_close(got, inter + intra)
    torch.testing.assert_close((terms["inter"], terms["intra"]), (inter, intra))


@pytest.mark.parametrize("spec", ["kd", KDLoss, KDLoss(), "dkd", DISTLoss()])
def test_logit_loss__standardize_resolves_for_every_form(spec):
    bound = resolve_logit_loss(
        spec, kd_weight=1.0, temperature=2.0, params={"standardize": True}
    )
    assert bound.loss.standardize is True
    if not isinstance(spec, str | type):
        assert spec.standardize is False  # the user's object is not modified


def test_a_standardize_that_is_not_a_bool_is_refused_naming_the_parameter():
    with pytest.raises(
        InputError,
        match=r"KDLoss's standardize must be True or False, got 'yes' "
        r"\(set by logit_loss__standardize\)",
    ):
        resolve_logit_loss(
            "kd", kd_weight=1.0, temperature=4.0, params={"standardize": "yes"}
        )
    with pytest.raises(InputError, match="logit_loss__standardize"):
        resolve_logit_loss(DKDLoss(standardize=1), kd_weight=1.0, temperature=4.0)
