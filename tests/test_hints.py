"""Hints at several layers: FitNet's, and PEFD's projectors at each stage."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.model_selection import GridSearchCV
from torch import nn

from projkd import ProjectorDistiller
from projkd.losses import as_positions, hint_loss
from projkd.models import DigitsCNN

from .conftest import FAST

TWO_STAGES = [("features.2", "features.2"), ("features.6", "features.6")]


def hinted(teacher, **params):
    settings = dict(FAST, student__width=4, hint_layers=TWO_STAGES, random_state=0)
    return ProjectorDistiller(teacher, DigitsCNN, **{**settings, **params})


def test_as_positions_pools_the_student_to_the_teachers_positions():
    student, teacher = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)
    pooled = as_positions(student, like=teacher)
    expected = F.avg_pool2d(student, 2).flatten(2).transpose(1, 2)
    torch.testing.assert_close(pooled, expected)
    tokens = torch.randn(2, 10, 6)  # (N, L, C) tokens stay channels-last
    assert as_positions(tokens).shape == (2, 10, 6)
    assert as_positions(torch.randn(2, 6, 4, 4), like=tokens).shape == (2, 10, 6)
    assert as_positions(torch.randn(2, 5)).shape == (2, 1, 5)


def test_hint_loss_is_cosine_per_position_or_mse():
    a, b = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    by_hand = 1 - (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
    torch.testing.assert_close(hint_loss(a, b), by_hand.mean())
    torch.testing.assert_close(hint_loss(a, b, kind="mse"), ((a - b) ** 2).mean())
    with pytest.raises(ValueError, match="shape"):
        hint_loss(a, b[:, :4])


def test_one_hint_step_with_one_mse_projector_is_fitnets_step(small_digits, teacher):
    """projkd's step (one pair, k = 1, MSE) equals a hand-written FitNet step:
    the student's map through a 1x1-convolution regressor + ReLU, the mean
    squared error to the teacher's map, plus the cross-entropy; one SGD step."""
    X, y = small_digits
    X, y = X[:32], y[:32]
    est = ProjectorDistiller(
        teacher,
        DigitsCNN,
        student__width=4,
        hint_layers=[("features.6", "features.7")],  # 8 channels -> 32
        hint_loss="mse",
        hint_weight=2.0,
        n_projectors=1,
        feature_weight=0.0,
        optimizer=torch.optim.SGD,
        lr=0.1,
        batch_size=32,
        max_epochs=1,
        train_split=None,
        iterator_train__shuffle=False,
        verbose=0,
        random_state=0,
    ).initialize_for(X, y)
    student = copy.deepcopy(est.module_)
    fused = est.hint_projectors_[0].fused
    regressor = nn.Conv2d(8, 32, kernel_size=1)
    with torch.no_grad():
        regressor.weight.copy_(fused.weight[0][:, :, None, None])
        regressor.bias.copy_(fused.bias[0])
    est.partial_fit(X, y)

    maps = {}
    student.features[6].register_forward_hook(lambda m, i, o: maps.update(s=o))
    teacher.features[7].register_forward_hook(lambda m, i, o: maps.update(t=o))
    x, target = torch.as_tensor(X), torch.as_tensor(y)
    student.train()
    with torch.no_grad():
        teacher(x)
    logits = student(x)
    hint = F.mse_loss(torch.relu(regressor(maps["s"])), maps["t"])
    loss = F.cross_entropy(logits, target) + 2.0 * hint
    params = [*student.parameters(), *regressor.parameters()]
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p -= 0.1 * g
    for (name, mine), theirs in zip(
        est.module_.named_parameters(), student.parameters(), strict=True
    ):
        torch.testing.assert_close(mine, theirs, msg=name, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused.weight[0], regressor.weight[:, :, 0, 0])
    assert est.history[-1, "train_hint"] == pytest.approx(float(hint), rel=1e-5)


def test_hints_at_two_stages_train_in_one_forward_pass(small_digits, teacher):
    X, y = small_digits
    calls = []
    est = hinted(teacher, batch_size=100)
    est.initialize_for(X, y)
    est.module_.features.register_forward_pre_hook(lambda m, args: calls.append(1))
    est.partial_fit(X, y)
    assert len(calls) == FAST["max_epochs"] * 3  # 300 samples, batches of 100
    assert est.history[-1, "train_hint"] > 0
    assert len(est.hint_projectors_) == 2
    assert est.hint_projectors_[0].fused.weight.shape == (3, 8, 4)  # k, C_t, C_s


def test_an_unknown_hint_layer_names_the_closest(small_digits, teacher):
    est = hinted(teacher, hint_layers=[("features.2", "featurs.2")])
    with pytest.raises(ValueError, match="closest names are features.2"):
        est.fit(*small_digits)
    with pytest.raises(ValueError, match=r"hint_layers\[0\]"):
        hinted(teacher, hint_layers=["features.2"]).fit(*small_digits)


def test_hints_turn_the_teacher_cache_off(small_digits, teacher):
    est = hinted(teacher, cache_teacher="auto")
    assert not est._caches_teacher(small_digits[0])
    with pytest.raises(ValueError, match="hint maps are computed at each step"):
        hinted(teacher, cache_teacher=True).fit(*small_digits)


def test_hints_under_mixed_precision_channels_last_and_compile(small_digits, teacher):
    X, y = small_digits
    eager = hinted(teacher).fit(X, y)
    compiled = hinted(teacher, compile=True, compile__backend="eager").fit(X, y)
    for key in ("train_loss", "train_hint"):
        assert compiled.history[-1, key] == pytest.approx(eager.history[-1, key])
    fast = hinted(teacher, mixed_precision="bf16", channels_last=True).fit(X, y)
    assert np.isfinite(fast.history[-1, "train_hint"])


def test_a_search_over_the_hint_settings(small_digits, teacher):
    grid = {
        "hint_layers": [None, TWO_STAGES[1:], TWO_STAGES],
        "hint_loss": ["cosine", "mse"],
    }
    search = GridSearchCV(hinted(teacher, max_epochs=1), grid, cv=2)
    search.fit(*small_digits)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_hints_train_data_parallel_through_ddps_forward(small_digits, teacher):
    from accelerate import Accelerator

    from projkd.parallel import AcceleratedProjectorDistiller, FeatureModule

    X, y = small_digits
    settings = dict(FAST, student__width=4, hint_layers=TWO_STAGES, random_state=0)
    est = AcceleratedProjectorDistiller(
        teacher, DigitsCNN, accelerator=Accelerator(cpu=True), **settings
    )
    est.set_params(unwrap_after_train=False, device=None).fit(X, y)
    wrapped = getattr(est.module_, "module", est.module_)  # DDP's, if any
    assert isinstance(wrapped, FeatureModule)  # the maps came out of its forward
    assert wrapped.hints == ("features.2", "features.6")
    one = hinted(teacher).fit(X, y)
    assert est.history[-1, "train_hint"] == pytest.approx(one.history[-1, "train_hint"])
