import pytest
import torch
from torch import nn

from projkd.projectors import ProjectorEnsemble


def test_ensemble_output_is_the_mean_of_its_projectors():
    ensemble = ProjectorEnsemble(4, 6, n_projectors=3, fuse=False)
    x = torch.randn(5, 4)
    expected = torch.stack([p(x) for p in ensemble.projectors]).mean(0)
    torch.testing.assert_close(ensemble(x), expected)


@pytest.mark.parametrize("fuse", [False, True])
def test_projectors_are_initialised_independently(fuse):
    ensemble = ProjectorEnsemble(4, 6, n_projectors=3, fuse=fuse)
    weights = (
        list(ensemble.fused.weight)
        if fuse
        else [p[0].weight for p in ensemble.projectors]
    )
    assert not torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[1], weights[2])


def test_fused_ensemble_starts_from_the_unfused_weights_and_computes_the_same():
    """Fusion is a faster way to compute the same function: from the same
    seed it holds the weights of k separate Linear layers (drawn in the same
    order), and its output and gradients equal k separate Linear + ReLU."""
    torch.manual_seed(3)
    fused = ProjectorEnsemble(16, 24, n_projectors=3)
    torch.manual_seed(3)
    unfused = ProjectorEnsemble(16, 24, n_projectors=3, fuse=False)
    assert fused.fused is not None and len(unfused.projectors) == 3
    for i, projector in enumerate(unfused.projectors):
        assert torch.equal(fused.fused.weight[i], projector[0].weight)
        assert torch.equal(fused.fused.bias[i], projector[0].bias)
    x = torch.randn(32, 16, requires_grad=True)
    out_fused, out_unfused = fused(x), unfused(x)
    torch.testing.assert_close(out_fused, out_unfused)
    assert (out_fused > 0).any() and (out_fused == 0).any()  # the ReLU acts
    target = torch.randn(32, 24)
    (grad_fused,) = torch.autograd.grad((out_fused * target).sum(), x)
    (grad_unfused,) = torch.autograd.grad((out_unfused * target).sum(), x)
    torch.testing.assert_close(grad_fused, grad_unfused)
    loss = (fused(x) * target).sum()
    loss.backward()
    (unfused(x) * target).sum().backward()
    for i, projector in enumerate(unfused.projectors):
        torch.testing.assert_close(fused.fused.weight.grad[i], projector[0].weight.grad)


def test_fused_ensemble_unfolds_into_separate_projectors():
    fused = ProjectorEnsemble(5, 7, n_projectors=2).fused
    assert fused is not None
    x = torch.randn(4, 5)
    separate = fused.unfused()
    expected = sum(p(x) for p in separate) / 2
    torch.testing.assert_close(fused(x), expected)


def test_custom_and_mlp_projectors_stay_unfused():
    custom = ProjectorEnsemble(
        3, 4, n_projectors=2, projector=lambda i, o: nn.Linear(i, o)
    )
    mlp = ProjectorEnsemble(3, 4, n_projectors=2, projector="mlp")
    assert custom.fused is None and len(custom.projectors) == 2
    assert mlp.fused is None and len(mlp.projectors) == 2


def test_linear_projector_is_linear_plus_relu():
    projector = ProjectorEnsemble(3, 2, n_projectors=1, fuse=False).projectors[0]
    assert isinstance(projector[0], nn.Linear) and isinstance(projector[1], nn.ReLU)
    assert (ProjectorEnsemble(3, 2, n_projectors=1)(torch.randn(8, 3)) >= 0).all()


def test_zero_projectors_is_the_identity():
    x = torch.randn(2, 5)
    assert ProjectorEnsemble(5, 5, n_projectors=0)(x) is x


def test_zero_projectors_with_unequal_widths_names_both_widths():
    with pytest.raises(ValueError, match=r"width 32 and the teacher's 64"):
        ProjectorEnsemble(32, 64, n_projectors=0)


def test_mlp_and_callable_projectors():
    mlp = ProjectorEnsemble(3, 4, n_projectors=2, projector="mlp")
    assert isinstance(mlp.projectors[0][1], nn.BatchNorm1d)
    custom = ProjectorEnsemble(
        3, 4, n_projectors=2, projector=lambda i, o: nn.Linear(i, o)
    )
    assert custom(torch.randn(2, 3)).shape == (2, 4)


def test_unknown_projector_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"'conv'.*\['linear', 'mlp'\]"):
        ProjectorEnsemble(3, 4, projector="conv")
