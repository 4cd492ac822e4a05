import math

import pytest
import torch
import torch.nn.functional as F

from projkd.losses import distillation_loss, feature_loss, kd_loss


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
