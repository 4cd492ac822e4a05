import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from projkd.losses import (
    dist_loss,
    dist_parts,
    distillation_loss,
    dkd_loss,
    dkd_parts,
    feature_loss,
    kd_loss,
)


def test_feature_loss_is_zero_when_aligned_and_one_when_orthogonal():
    t = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    assert float(feature_loss(5 * t, t)) == pytest.approx(0.0, abs=1e-6)
    orthogonal = torch.tensor([[-2.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert float(feature_loss(orthogonal, t)) == pytest.approx(1.0, abs=1e-6)
    assert float(feature_loss(-t, t)) == pytest.approx(2.0, abs=1e-6)


def test_feature_loss_is_the_batch_mean():
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # cos 1 and cos 0
    assert float(feature_loss(s, t)) == pytest.approx(0.5)


def test_feature_loss_rejects_mismatched_widths():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        feature_loss(torch.ones(2, 3), torch.ones(2, 4))


def test_kd_loss_matches_a_hand_computed_value():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])  # p_teacher = (3/4, 1/4) at T=1
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert float(kd_loss(student, teacher, temperature=1.0)) == pytest.approx(expected)
    # at T=2 the teacher's logits halve, and the loss is scaled by T^2 = 4
    p = torch.softmax(teacher / 2, dim=1)[0]
    expected_t2 = 4 * float((p * torch.log(p / 0.5)).sum())
    assert float(kd_loss(student, teacher, temperature=2.0)) == pytest.approx(
        expected_t2
    )


def test_kd_loss_is_zero_for_identical_logits():
    z = torch.randn(5, 7)
    assert float(kd_loss(z, z)) == pytest.approx(0.0, abs=1e-6)


def test_distillation_loss_weights_its_terms():
    torch.manual_seed(0)
    logits, teacher_logits = torch.randn(6, 4), torch.randn(6, 4)
    projected, teacher_features = torch.randn(6, 5), torch.randn(6, 5)
    target = torch.tensor([0, 1, 2, 3, 0, 1])
    loss, terms = distillation_loss(
        logits,
        target,
        teacher_logits=teacher_logits,
        projected=projected,
        teacher_features=teacher_features,
        ce_weight=0.5,
        kd_weight=2.0,
        feature_weight=25.0,
        temperature=3.0,
    )
    torch.testing.assert_close(terms["ce"], F.cross_entropy(logits, target))
    torch.testing.assert_close(
        terms["kd"], kd_loss(logits, teacher_logits, temperature=3.0)
    )
    torch.testing.assert_close(terms["feat"], feature_loss(projected, teacher_features))
    torch.testing.assert_close(
        loss, 0.5 * terms["ce"] + 2.0 * terms["kd"] + 25.0 * terms["feat"]
    )


def test_kd_term_uses_kd_logits_when_given():
    logits, teacher_logits = torch.randn(3, 4), torch.randn(3, 4)
    _, terms = distillation_loss(
        logits,
        torch.zeros(3, dtype=torch.long),
        teacher_logits=teacher_logits,
        projected=torch.ones(3, 2),
        teacher_features=torch.ones(3, 2),
        kd_logits=teacher_logits,
    )
    assert float(terms["kd"]) == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------- DKD, DIST
# Independent references, written from the papers' equations in float64 numpy.
def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _kl(p, q):  # KL(p || q) per row
    return (p * (np.log(p) - np.log(q))).sum(axis=1)


def _dkd_reference(zs, zt, y, alpha, beta, T):
    """Zhao et al. (arXiv:2203.08679) eq. (1)-(7): b = (p_t, 1 - p_t) and the
    non-target distribution p_i / (1 - p_t); TCKD and NCKD are KL's of them."""
    zs, zt = zs.astype(np.float64) / T, zt.astype(np.float64) / T
    ps, pt = _softmax(zs), _softmax(zt)
    rows = np.arange(len(y))
    bs = np.stack([ps[rows, y], 1 - ps[rows, y]], axis=1)
    bt = np.stack([pt[rows, y], 1 - pt[rows, y]], axis=1)
    rest = np.ones_like(ps, dtype=bool)
    rest[rows, y] = False
    n, c = ps.shape
    hs = ps[rest].reshape(n, c - 1) / bs[:, 1:]
    ht = pt[rest].reshape(n, c - 1) / bt[:, 1:]
    tckd, nckd = T**2 * _kl(bt, bs).mean(), T**2 * _kl(ht, hs).mean()
    return tckd, nckd, alpha * tckd + beta * nckd


def _pearson_reference(a, b):  # row by row
    return np.array([np.corrcoef(u, v)[0, 1] for u, v in zip(a, b, strict=True)])


def _dist_reference(zs, zt, beta, gamma, T):
    """Huang et al. (arXiv:2205.10536) eq. (5)-(8): 1 - mean Pearson
    correlation over the rows (inter) and the columns (intra), times T^2."""
    ps = _softmax(zs.astype(np.float64) / T)
    pt = _softmax(zt.astype(np.float64) / T)
    inter = T**2 * (1 - _pearson_reference(ps, pt).mean())
    intra = T**2 * (1 - _pearson_reference(ps.T, pt.T).mean())
    return inter, intra, beta * inter + gamma * intra


@pytest.mark.parametrize("shape", [(4, 3), (16, 10), (7, 100)])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("alpha, beta", [(1.0, 8.0), (0.5, 2.0)])
def test_dkd_loss_matches_the_papers_equations(shape, temperature, alpha, beta):
    gen = torch.Generator().manual_seed(shape[0] * shape[1])
    zs, zt = (
        3 * torch.randn(shape, generator=gen),
        3 * torch.randn(shape, generator=gen),
    )
    y = torch.randint(shape[1], (shape[0],), generator=gen)
    tckd, nckd, total = _dkd_reference(
        zs.numpy(), zt.numpy(), y.numpy(), alpha, beta, temperature
    )
    parts = dkd_parts(zs, zt, y, temperature=temperature)
    assert [float(p) for p in parts] == pytest.approx([tckd, nckd], rel=1e-4, abs=1e-6)
    got = dkd_loss(zs, zt, y, alpha=alpha, beta=beta, temperature=temperature)
    assert float(got) == pytest.approx(total, rel=1e-4, abs=1e-6)


def test_kd_is_tckd_plus_the_teachers_non_target_mass_times_nckd():
    # the paper's eq. (4), sample by sample: KD = TCKD + (1 - p_t^T) NCKD
    zs, zt, y = torch.randn(5, 6), torch.randn(5, 6), torch.tensor([0, 5, 2, 2, 1])
    for i in range(5):
        s, t, label = zs[i : i + 1], zt[i : i + 1], y[i : i + 1]
        tckd, nckd = dkd_parts(s, t, label, temperature=2.0)
        rest = 1 - torch.softmax(t / 2.0, dim=1)[0, label]
        kd = kd_loss(s, t, temperature=2.0)
        assert float(kd) == pytest.approx(float(tckd + rest * nckd), rel=1e-4)


def test_dkd_loss_is_zero_for_identical_logits_and_rejects_bad_input():
    z, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    assert float(dkd_loss(z, z, y)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="at least 2 classes"):
        dkd_loss(torch.ones(3, 1), torch.ones(3, 1), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"one class index per sample, shape \(4,\)"):
        dkd_loss(z, z, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="same classes"):
        dkd_loss(z, torch.randn(4, 6), y)


@pytest.mark.parametrize("shape", [(4, 3), (16, 10), (9, 100)])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("beta, gamma", [(1.0, 1.0), (2.0, 0.5)])
def test_dist_loss_matches_the_papers_equations(shape, temperature, beta, gamma):
    gen = torch.Generator().manual_seed(shape[0] + shape[1])
    zs, zt = (
        3 * torch.randn(shape, generator=gen),
        3 * torch.randn(shape, generator=gen),
    )
    inter, intra, total = _dist_reference(
        zs.numpy(), zt.numpy(), beta, gamma, temperature
    )
    parts = dist_parts(zs, zt, temperature=temperature)
    assert [float(p) for p in parts] == pytest.approx([inter, intra], rel=1e-4)
    got = dist_loss(zs, zt, beta=beta, gamma=gamma, temperature=temperature)
    assert float(got) == pytest.approx(total, rel=1e-4)


def test_dist_loss_needs_two_samples_for_its_intra_class_relation():
    z = torch.randn(1, 5)
    with pytest.raises(ValueError, match="at least 2 samples; got a batch of 1"):
        dist_loss(z, z)


@pytest.mark.parametrize("scale", [1e3, 1e5])
def test_large_logits_give_finite_losses_and_gradients(scale):
    zs = (scale * torch.randn(8, 10)).requires_grad_()
    zt, y = scale * torch.randn(8, 10), torch.arange(8) % 10
    for loss in (
        dkd_loss(zs, zt, y, temperature=4.0),
        dist_loss(zs, zt, temperature=4.0),
        kd_loss(zs, zt, temperature=4.0),
    ):
        (grad,) = torch.autograd.grad(loss, zs)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
