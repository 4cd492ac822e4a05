"""Every constructor parameter through scikit-learn's protocol, generated.

For each parameter of :class:`~projkd.ProjectorDistiller` (two valid
values each, listed in ``VALUES``): the ``get_params`` -> ``set_params`` ->
``fit`` round trip on an unfitted and on a fitted estimator, a
``GridSearchCV`` over its two values, and ``clone`` after ``fit``. A
parameter added to ``__init__`` without an entry here fails
:func:`test_every_parameter_has_two_values`.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from torch import nn

from projkd import ProjectorDistiller
from projkd.augment import RandomCropFlip
from projkd.models import DigitsCNN

BASE = dict(
    student__width=2,
    kd_weight=1.0,
    max_epochs=1,
    batch_size=32,
    train_split=None,
    verbose=0,
    random_state=0,
)


class SmoothedCE(nn.CrossEntropyLoss):
    def __init__(self) -> None:
        super().__init__(label_smoothing=0.1)


def small_student(num_classes: int = 10, width: int = 2) -> nn.Module:
    return DigitsCNN(width=width, n_features=8, num_classes=num_classes)


TEACHERS = (DigitsCNN(width=4, n_features=16).eval(), DigitsCNN(width=4).eval())

#: two valid values of every constructor parameter (the first is the default
#: where one exists)
VALUES = {
    "teacher": TEACHERS,
    "student": (DigitsCNN, small_student),
    "n_projectors": (3, 1),
    "projector": ("linear", "mlp"),
    "feature_weight": (25.0, 0.0),
    "feature_loss": ("cosine", "srd"),
    "kd_weight": (0.0, 1.0),
    "ce_weight": (1.0, 0.5),
    "temperature": (4.0, 2.0),
    "logit_loss": ("kd", "dist"),
    "logit_projector": (False, True),
    "logit_projector_init": ("identity", "default"),
    "teacher_layer": (None, "features.11"),
    "student_layer": (None, "features.10"),
    "hint_layers": (None, [("features.5", "features.6")]),
    "hint_weight": (1.0, 0.5),
    "hint_loss": ("cosine", "mse"),
    "cache_teacher": ("auto", False),
    "memory": (None, "MEMORY"),  # a joblib folder, made per test
    "nonfinite_loss": ("raise", "skip"),
    "train_transform": (None, RandomCropFlip(1)),
    "random_state": (None, 1),
    "mixed_precision": (None, "bf16"),
    "channels_last": (False, True),
    "data_device": ("auto", "cpu"),
    "criterion": (nn.CrossEntropyLoss, SmoothedCE),
    "predict_nonlinearity": ("auto", None),
}
NAMES = sorted(VALUES)


def constructor_parameters() -> set[str]:
    signature = inspect.signature(ProjectorDistiller.__init__)
    return {name for name in signature.parameters if name not in ("self", "kwargs")}


def values(name: str, tmp_path) -> tuple:
    if name == "memory":
        return (None, str(tmp_path / "memory"))
    return VALUES[name]


def make(**params) -> ProjectorDistiller:
    return ProjectorDistiller(
        **{"teacher": TEACHERS[0], "student": DigitsCNN, **BASE, **params}
    )


@pytest.fixture(scope="module")
def data(small_digits):
    X, y = small_digits
    return X[:64], y[:64]


def test_every_parameter_has_two_values():
    assert constructor_parameters() == set(VALUES)


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_on_an_unfitted_and_a_fitted_estimator(name, data, tmp_path):
    first, second = values(name, tmp_path)
    est = make(**{name: first})
    est.set_params(**{name: second})
    est.set_params(**est.get_params(deep=False))  # the round trip
    assert getattr(est, name) is second or getattr(est, name) == second
    est.fit(*data)
    proba = est.predict_proba(data[0])
    # fitted: the round trip changes nothing, not even by re-initialising
    module = est.module_
    est.set_params(**est.get_params(deep=False))
    assert est.module_ is module
    np.testing.assert_array_equal(est.predict_proba(data[0]), proba)
    # and a new value takes effect at the next fit, whole
    est.set_params(**{name: first}).fit(*data)
    assert np.isfinite(est.predict_proba(data[0])).all()
    assert getattr(est, name) is first or getattr(est, name) == first


@pytest.mark.parametrize("name", NAMES)
def test_grid_search_over_each_parameter(name, data, tmp_path):
    grid = {name: list(values(name, tmp_path))}
    search = GridSearchCV(make(), grid, cv=2, error_score="raise").fit(*data)
    assert len(search.cv_results_["mean_test_score"]) == 2
    assert search.best_estimator_.predict(data[0][:3]).shape == (3,)


@pytest.mark.parametrize("name", NAMES)
def test_clone_after_fit(name, data, tmp_path):
    second = values(name, tmp_path)[1]
    est = make(**{name: second}).fit(*data)
    copy = clone(est)
    assert not copy.initialized_ and not hasattr(copy, "module_")
    value = copy.get_params()[name]
    if name == "teacher":
        assert value is second  # shared, never copied: it is read-only
    elif isinstance(second, nn.Module):
        assert value is not second and type(value) is type(second)
    else:
        assert value == second


def test_a_changed_teacher_student_or_augmentation_takes_effect_whole(data):
    X, y = data
    est = make().fit(X, y)
    other = TEACHERS[1]
    est.set_params(teacher=other)  # rebuilt at once: never the old teacher_
    assert est.teacher is other and est.n_teacher_features_ == 64
    expected = other(torch.as_tensor(X[:4])).softmax(dim=1).detach().numpy()
    np.testing.assert_allclose(est.predict_proba_teacher(X[:4]), expected, rtol=1e-5)
    est.set_params(student=small_student).fit(X, y)
    assert est.n_student_features_ == 8
    seen = []
    est.set_params(train_transform=lambda x: seen.append(len(x)) or x).fit(X, y)
    assert sum(seen) == len(X)


def test_one_set_params_re_initialises_each_part_once(data, capsys):
    est = make(verbose=1).fit(*data)
    capsys.readouterr()
    est.set_params(student__width=3, n_projectors=2, criterion__label_smoothing=0.1)
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        "Re-initializing module because the following parameters were re-set: "
        "criterion__label_smoothing, n_projectors, student__width.",
        "Re-initializing criterion.",
        "Re-initializing optimizer.",
    ]
    assert len(est.projectors_) == 2 and est.criterion_.label_smoothing == 0.1


def test_layer_and_init_parameters_set_on_a_fitted_estimator(data):
    est = make(logit_projector=True).fit(*data)
    est.set_params(student_layer="features.10", teacher_layer="features.11")
    est.set_params(logit_projector_init="default").fit(*data)
    assert not torch.equal(est.logit_projector_.weight, torch.eye(10))
    assert est.fit(*data).history[-1, "train_feat"] >= 0
