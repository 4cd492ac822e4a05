import pytest
import torch
from torch import nn

from projkd.projectors import ProjectorEnsemble


def test_ensemble_output_is_the_mean_of_its_projectors():
    ensemble = ProjectorEnsemble(4, 6, n_projectors=3)
    x = torch.randn(5, 4)
    expected = torch.stack([p(x) for p in ensemble.projectors]).mean(0)
    torch.testing.assert_close(ensemble(x), expected)


def test_projectors_are_initialised_independently():
    ensemble = ProjectorEnsemble(4, 6, n_projectors=3)
    weights = [p[0].weight for p in ensemble.projectors]
    assert not torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[1], weights[2])


def test_linear_projector_is_linear_plus_relu():
    projector = ProjectorEnsemble(3, 2, n_projectors=1).projectors[0]
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
