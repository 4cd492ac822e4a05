"""The feature losses: the normalised projector's term (Miles and Mikolajczyk,
AAAI 2024, arXiv:2303.11098) against the authors' code, the feature-loss
objects, how the estimator's ``feature_loss`` resolves, and the objective's
``feature_loss_fn``."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from torch import nn

from projkd.errors import InputError
from projkd.losses import (
    FEATURE_LOSSES,
    CosineLoss,
    DKDLoss,
    FeatureLoss,
    LogitLoss,
    LossParameters,
    SRDLoss,
    check_feature_loss,
    distillation_loss,
    feature_loss,
    resolve_feature_loss,
    srd_loss,
)


# ------------------------------------------------- the authors' code, as is
def authors_srd(f_s, f_t, eps=1e-4):
    """``OurDistillationLoss.forward_loss`` of roymiles/Simple-Recipe-Distillation,
    imagenet/torchdistill/losses/single.py (commit 31e8477c), after its
    projector ``embed``: two BatchNorm1d modules, in training mode as the
    loss module is throughout training. torchdistill's ``SRDLoss`` computes
    the same (``SRDModelWrapper``'s BatchNorm1d, then
    ``log(|a - b|.pow(exponent=4).sum())``)."""
    bn_s = nn.BatchNorm1d(f_s.shape[1], eps=eps, affine=False)
    bn_t = nn.BatchNorm1d(f_t.shape[1], eps=eps, affine=False)
    f_s_norm = bn_s(f_s)
    f_t_norm = bn_t(f_t)
    c_diff = f_s_norm - f_t_norm
    c_diff = torch.abs(c_diff)
    c_diff = c_diff.pow(4.0)
    return torch.log(c_diff.sum())


def batch_standardized(x, eps):
    """The paper's normalisation written out: batch mean, biased variance."""
    mean = x.mean(0, keepdim=True)
    variance = ((x - mean) ** 2).mean(0, keepdim=True)
    return (x - mean) / torch.sqrt(variance + eps)


def features(n=32, d=24, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    projected = 3.0 * torch.randn(n, d, generator=generator, dtype=dtype) + 1.0
    teacher = torch.relu(torch.randn(n, d, generator=generator, dtype=dtype)) * 5.0
    return projected, teacher


# ------------------------------------------------------- the pure function
@pytest.mark.parametrize("shape", [(3, 3), (8, 1), (64, 128)])
@pytest.mark.parametrize("eps", [1e-4, 1e-2])
def test_srd_loss_equals_the_authors_batchnorm_code(shape, eps):
    projected, teacher = features(*shape)
    got = srd_loss(projected, teacher, eps=eps)
    torch.testing.assert_close(got, authors_srd(projected, teacher, eps=eps))
    written_out = (
        (batch_standardized(projected, eps) - batch_standardized(teacher, eps))
        .abs()
        .pow(4)
        .sum()
        .log()
    )
    torch.testing.assert_close(got, written_out)


def test_srd_loss_uses_the_batch_not_running_statistics():
    """An eval-mode BatchNorm1d (running mean 0, variance 1) is nearly the
    identity: the loss would then depend on the features' scale."""
    projected, teacher = features()
    assert torch.isclose(srd_loss(projected, teacher), srd_loss(projected, 7 * teacher))
    frozen = nn.BatchNorm1d(teacher.shape[1], eps=1e-4, affine=False).eval()
    eval_mode = (frozen(projected) - frozen(teacher)).abs().pow(4).sum().log()
    assert not torch.isclose(srd_loss(projected, teacher), eval_mode, rtol=1e-2)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from(["projected", "teacher"]),
    st.floats(0.05, 20.0),
    st.floats(-100.0, 100.0),
)
def test_srd_loss_ignores_a_per_dimension_affine_map(seed, which, scale, shift):
    """The normalisation removes each dimension's location and scale (up to
    ``eps``, negligible here in float64)."""
    projected, teacher = features(n=16, d=6, seed=seed, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed + 1)
    scales = scale * (0.5 + torch.rand(6, generator=generator, dtype=torch.float64))
    shifts = shift * torch.randn(6, generator=generator, dtype=torch.float64)
    moved = {"projected": projected, "teacher": teacher}
    moved[which] = scales * moved[which] + shifts
    reference = srd_loss(projected, teacher, eps=1e-12)
    torch.testing.assert_close(
        srd_loss(moved["projected"], moved["teacher"], eps=1e-12), reference
    )


def test_srd_loss_sums_in_float32_at_least():
    """A sum of fourth powers over a batch overflows float16's 65504."""
    projected, teacher = features(n=256, d=512)
    half = srd_loss(projected.half(), teacher.half())
    assert half.dtype == torch.float32 and torch.isfinite(half)
    torch.testing.assert_close(half, srd_loss(projected, teacher), rtol=1e-3, atol=0)
    double = srd_loss(projected.double(), teacher.double())
    assert double.dtype == torch.float64


def test_srd_loss_gradient_reaches_the_projection():
    projected, teacher = features()
    projected.requires_grad_()
    srd_loss(projected, teacher).backward()
    assert projected.grad is not None and torch.isfinite(projected.grad).all()
    assert projected.grad.abs().sum() > 0


def test_srd_loss_refuses_what_it_cannot_compute():
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(4, 5\)"):
        srd_loss(torch.ones(4, 3), torch.ones(4, 5))
    with pytest.raises(ValueError, match=r"N >= 2; got \(1, 3\)"):
        srd_loss(torch.ones(1, 3), torch.ones(1, 3))
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        srd_loss(torch.ones(4, 3, 2), torch.ones(4, 3, 2))
    with pytest.raises(ValueError, match="eps must be a number > 0, got 0.0"):
        srd_loss(*features(), eps=0.0)


# ------------------------------------------------------------ the objects
def test_feature_loss_objects_call_the_functions():
    projected, teacher = features()
    assert torch.equal(
        CosineLoss()(projected, teacher), feature_loss(projected, teacher)
    )
    assert torch.equal(
        SRDLoss(eps=1e-2)(projected, teacher), srd_loss(projected, teacher, eps=1e-2)
    )
    assert FEATURE_LOSSES == {"cosine": CosineLoss, "srd": SRDLoss}
    assert CosineLoss.terms == SRDLoss.terms == ()
    assert SRDLoss().needs_pairs and not CosineLoss().needs_pairs


def test_feature_loss_objects_have_parameters_clone_and_pickle():
    loss = SRDLoss(eps=1e-5)
    assert loss.get_params() == {"eps": 1e-5}
    assert repr(loss) == "SRDLoss(eps=1e-05)" and repr(CosineLoss()) == "CosineLoss()"
    assert CosineLoss().get_params() == {}
    assert loss.set_params(eps=1e-3) is loss and loss.eps == 1e-3
    copy = clone(loss)
    assert copy is not loss and copy == loss == SRDLoss(eps=1e-3)
    assert pickle.loads(pickle.dumps(loss)) == loss
    assert SRDLoss() == SRDLoss(eps=1e-4) != SRDLoss(eps=1e-5)
    assert CosineLoss() == CosineLoss() and CosineLoss() != SRDLoss()
    with pytest.raises(ValueError, match=r"'tau' for SRDLoss; its parameters are"):
        loss.set_params(tau=1.0)
    with pytest.raises(ValueError, match="parameters are none"):
        CosineLoss().set_params(eps=1.0)


def test_logit_and_feature_losses_share_one_parameter_mechanism():
    assert issubclass(LogitLoss, LossParameters)
    assert issubclass(FeatureLoss, LossParameters)
    for method in ("get_params", "set_params", "check", "__repr__", "__eq__"):
        assert getattr(SRDLoss, method) is getattr(DKDLoss, method)


@pytest.mark.parametrize("eps", [0.0, -1.0, float("inf"), float("nan"), "1e-4", True])
def test_srd_eps_out_of_range_is_refused(eps):
    with pytest.raises(ValueError, match="SRDLoss's eps must be a finite number > 0"):
        SRDLoss(eps=eps).check()
    with pytest.raises(InputError, match=r"\(set by feature_loss__eps\)"):
        resolve_feature_loss(SRDLoss(eps=eps))


# ------------------------------------------------------------- resolution
class ModuleLoss(nn.Module):
    def forward(self, projected, teacher_features):
        return F.mse_loss(projected, teacher_features)


@pytest.mark.parametrize(
    ("spec", "params", "expected"),
    [
        ("cosine", None, CosineLoss()),
        ("srd", None, SRDLoss()),
        ("srd", {"eps": 1e-5}, SRDLoss(eps=1e-5)),
        (SRDLoss, {"eps": 1e-3}, SRDLoss(eps=1e-3)),
        (CosineLoss, None, CosineLoss()),
        (SRDLoss(eps=1e-2), None, SRDLoss(eps=1e-2)),
        (SRDLoss(eps=1e-2), {"eps": 1e-6}, SRDLoss(eps=1e-6)),
    ],
)
def test_resolve_feature_loss_builds_each_form(spec, params, expected):
    loss = resolve_feature_loss(spec, params=params)
    assert loss == expected
    if isinstance(spec, SRDLoss):
        assert spec == SRDLoss(eps=1e-2)  # the user's object is not modified
        assert (loss is spec) == (not params)


def test_resolve_feature_loss_takes_a_callable_as_it_is():
    def plain(projected, teacher_features):
        return (projected - teacher_features).pow(2).mean()

    module = ModuleLoss()
    assert resolve_feature_loss(plain) is plain
    assert resolve_feature_loss(module) is module


@pytest.mark.parametrize(
    ("spec", "params", "message"),
    [
        ("cosin", None, r"feature_loss='cosin' is not a feature loss.*\['cosine'"),
        (3, None, "feature_loss=3 is not a feature loss"),
        ("cosin", {"eps": 1.0}, "feature_loss='cosin' is not a feature loss"),
        (object, None, "feature_loss=object builds <object .*not callable"),
        ("srd", {"tau": 1.0}, r"feature_loss__tau=1.0.*'tau'"),
        (SRDLoss(), {"tau": 1.0}, r"feature_loss__tau=1.0: Invalid parameter"),
        (CosineLoss, {"eps": 1.0}, "feature_loss=CosineLoss could not be built"),
        (feature_loss, {"eps": 1.0}, "feature_loss__eps=1.0 sets an option"),
        ("srd", {"eps": -1.0}, r"SRDLoss's eps .* \(set by feature_loss__eps\)"),
    ],
)
def test_resolve_feature_loss_refuses_naming_the_parameter(spec, params, message):
    with pytest.raises(InputError, match=message):
        resolve_feature_loss(spec, params=params)


# ------------------------------------------------------------- the probe
@pytest.mark.parametrize("loss", [CosineLoss(), SRDLoss(), ModuleLoss()])
def test_check_feature_loss_accepts_working_losses_without_the_global_rng(loss):
    state = torch.random.get_rng_state()
    check_feature_loss(loss, 7, name=repr(loss))
    check_feature_loss(loss, 1, name=repr(loss))  # one feature: still 4 samples
    assert torch.equal(torch.random.get_rng_state(), state)


def test_the_probe_batch_gives_srd_a_finite_loss():
    seen = []

    def recording(projected, teacher_features):
        seen.append((projected.detach(), teacher_features))
        return srd_loss(projected, teacher_features)

    check_feature_loss(recording, 5, name="recording")
    ((projected, teacher),) = seen
    assert projected.shape == teacher.shape == (4, 5)
    assert torch.isfinite(srd_loss(projected, teacher))
    assert (projected.var(0) > 0).all() and (teacher.var(0) > 0).all()


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        (lambda projected: projected.sum(), "failed on a batch of 4 samples of 6"),
        (lambda p, t, y: p.sum(), "failed on a batch.*TypeError"),
        (lambda p, t: (p - t).abs(), r"returned a tensor of shape \(4, 6\)"),
        (lambda p, t: float((p - t).detach().sum()), "returned float"),
        (lambda p, t: (p.sum(), {}), "returned tuple"),
    ],
)
def test_check_feature_loss_refuses_a_broken_callable(loss, message):
    with pytest.raises(InputError, match=f"feature_loss=mine {message}"):
        check_feature_loss(loss, 6, name="mine")


# ------------------------------------------------------------ the objective
def test_distillation_loss_uses_the_feature_loss_fn():
    torch.manual_seed(0)
    logits, target = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    projected, teacher_features = features(n=6, d=5)
    common = dict(
        teacher_logits=None,
        projected=projected,
        teacher_features=teacher_features,
        ce_weight=0.5,
        feature_weight=2.0,
    )
    loss, terms = distillation_loss(logits, target, **common, feature_loss_fn=SRDLoss())
    torch.testing.assert_close(terms["feat"], srd_loss(projected, teacher_features))
    torch.testing.assert_close(loss, 0.5 * terms["ce"] + 2.0 * terms["feat"])
    default, default_terms = distillation_loss(logits, target, **common)
    explicit, _ = distillation_loss(logits, target, **common, feature_loss_fn=None)
    torch.testing.assert_close(
        default_terms["feat"], feature_loss(projected, teacher_features)
    )
    assert torch.equal(default, explicit)


def test_a_switched_off_feature_term_never_calls_the_feature_loss_fn():
    def refuse(projected, teacher_features):
        raise AssertionError("called")

    logits, target = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    _, terms = distillation_loss(
        logits,
        target,
        teacher_logits=None,
        projected=None,
        teacher_features=None,
        feature_weight=0.0,
        feature_loss_fn=refuse,
    )
    assert float(terms["feat"]) == 0.0
