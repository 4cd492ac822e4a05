"""The catalogue of bad input: each refused with the named exception type and
a message naming the problem, before any training step."""

import numpy as np
import pytest
import scipy.sparse
import torch
from sklearn.exceptions import NotFittedError
from skorch.callbacks import Callback

from projkd import ProjectorDistiller
from projkd.models import DigitsCNN

from .conftest import FAST


class StepSpy(Callback):
    def __init__(self, log):
        self.log = log

    def on_batch_begin(self, net, **kwargs):
        self.log.append(1)


@pytest.fixture
def data(small_digits):
    X, y = small_digits
    return X[:60].copy(), y[:60].copy()


def make(**params):
    kwargs = dict(FAST, student=DigitsCNN, student__width=4, student__n_features=16)
    kwargs.update(params)
    teacher = kwargs.pop("teacher", DigitsCNN(width=8, n_features=32).eval())
    return ProjectorDistiller(teacher, **kwargs)


def with_nan(X, y):
    X = X.copy()
    X[3, 0, 2, 2] = np.nan
    return X, y


def with_inf(X, y):
    X = X.copy()
    X[0, 0, 0, 0] = np.inf
    return X, y


FIT_CASES = {
    # X
    "X-strings": (lambda X, y: (np.full(X.shape, "a"), y), {}, TypeError, "numeric"),
    "X-nan": (with_nan, {}, ValueError, "NaN or infinity"),
    "X-inf": (with_inf, {}, ValueError, "NaN or infinity"),
    "X-empty": (lambda X, y: (X[:0], y[:0]), {}, ValueError, "0 sample"),
    "X-no-features": (
        lambda X, y: (X.reshape(len(X), -1)[:, :0], y),
        {},
        ValueError,
        "0 feature",
    ),
    "X-1d": (
        lambda X, y: (X.reshape(-1)[: len(y)], y),
        {},
        ValueError,
        "Reshape your data",
    ),
    "X-shape-for-teacher": (
        lambda X, y: (np.repeat(X, 3, axis=1), y),
        {},
        ValueError,
        r"teacher \(DigitsCNN\) cannot take samples of shape \(3, 8, 8\)",
    ),
    "X-sparse": (
        lambda X, y: (scipy.sparse.csr_matrix(X.reshape(len(X), -1)), y),
        {},
        TypeError,
        "Sparse input",
    ),
    "X-complex": (
        lambda X, y: (X.astype(np.complex64), y),
        {},
        ValueError,
        "Complex data",
    ),
    # y
    "y-length": (lambda X, y: (X, y[:-3]), {}, ValueError, "60 samples but y has 57"),
    "y-one-class": (
        lambda X, y: (X, np.zeros_like(y)),
        {},
        ValueError,
        "only one class",
    ),
    "y-nan": (
        lambda X, y: (X, np.where(np.arange(len(y)) == 0, np.nan, y)),
        {},
        ValueError,
        "NaN",
    ),
    "y-continuous": (lambda X, y: (X, y + 0.5), {}, ValueError, "Unknown label type"),
    "y-2d": (lambda X, y: (X, np.stack([y, y], 1)), {}, ValueError, "1-D"),
    "y-too-many-classes": (
        lambda X, y: (X, np.where(np.arange(len(y)) < 2, 10 + np.arange(len(y)), y)),
        {},
        ValueError,
        "teacher has 10 outputs but there are 12 classes",
    ),
    # parameters
    "teacher-not-a-module": (
        None,
        {"teacher": "resnet32x4"},
        ValueError,
        "'teacher' parameter",
    ),
    "student-not-a-module": (None, {"student": 42}, ValueError, "'student' parameter"),
    "n_projectors-negative": (
        None,
        {"n_projectors": -1},
        ValueError,
        "'n_projectors' parameter",
    ),
    "n_projectors-float": (
        None,
        {"n_projectors": 1.5},
        ValueError,
        "'n_projectors' parameter",
    ),
    "projector-unknown": (
        None,
        {"projector": "conv"},
        ValueError,
        "'projector' parameter",
    ),
    "feature_weight-negative": (
        None,
        {"feature_weight": -1.0},
        ValueError,
        "'feature_weight'",
    ),
    "kd_weight-negative": (None, {"kd_weight": -0.1}, ValueError, "'kd_weight'"),
    "ce_weight-negative": (None, {"ce_weight": -2}, ValueError, "'ce_weight'"),
    "temperature-zero": (None, {"temperature": 0}, ValueError, "'temperature'"),
    "temperature-negative": (None, {"temperature": -4.0}, ValueError, "'temperature'"),
    "teacher_layer-unknown": (
        None,
        {"teacher_layer": "layer9"},
        ValueError,
        "'layer9' is not a module",
    ),
    "student_layer-unknown": (
        None,
        {"student_layer": "head"},
        ValueError,
        "'head' is not a module",
    ),
    "no-projector-unequal-widths": (
        None,
        {"n_projectors": 0},
        ValueError,
        "width 16 and the teacher's 32",
    ),
    "cache_teacher-unknown": (
        None,
        {"cache_teacher": "yes"},
        ValueError,
        "'cache_teacher'",
    ),
    "nonfinite_loss-unknown": (
        None,
        {"nonfinite_loss": "ignore"},
        ValueError,
        "'nonfinite_loss'",
    ),
    "batch_size-zero": (None, {"batch_size": 0}, ValueError, "'batch_size'"),
    "batch_size-negative": (None, {"batch_size": -2}, ValueError, "'batch_size'"),
    "batch_size-float": (None, {"batch_size": 32.0}, ValueError, "'batch_size'"),
    "batch_size-none": (None, {"batch_size": None}, ValueError, "'batch_size'"),
    "iterator_train__batch_size-zero": (
        None,
        {"iterator_train__batch_size": 0},
        ValueError,
        "'iterator_train__batch_size'",
    ),
    "iterator_valid__batch_size-zero": (
        None,
        {"iterator_valid__batch_size": 0, "train_split": 0.2},
        ValueError,
        "'iterator_valid__batch_size'",
    ),
    "weights-all-zero": (
        None,
        {"ce_weight": 0, "kd_weight": 0.0, "feature_weight": 0},
        ValueError,
        "ce_weight, kd_weight and feature_weight are all 0.*nothing to learn from",
    ),
    "student-wrong-outputs": (
        None,
        {"student__num_classes": 7},
        ValueError,
        "student has 7 outputs",
    ),
}


@pytest.mark.parametrize(
    "change, params, error, message", FIT_CASES.values(), ids=FIT_CASES.keys()
)
def test_fit_refuses_bad_input_before_training(data, change, params, error, message):
    X, y = change(*data) if change else data
    steps = []
    est = make(callbacks=[StepSpy(steps)], **params)
    with pytest.raises(error, match=message):
        est.fit(X, y)
    assert steps == []


def test_use_before_fit_is_a_not_fitted_error(data):
    est = make()
    for method in (
        est.predict,
        est.predict_proba,
        est.transform,
        est.transform_teacher,
    ):
        with pytest.raises(NotFittedError):
            method(data[0])
    with pytest.raises(NotFittedError):
        est.score(*data)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda X: X[:, :, :4, :4],
            r"samples of shape \(1, 4, 4\), but ProjectorDistiller "
            r"was fitted on samples of shape \(1, 8, 8\)",
        ),
        (lambda X: X.reshape(len(X), -1), "fitted on samples of shape"),
        (lambda X: np.where(np.isfinite(X), np.nan, X), "NaN or infinity"),
    ],
    ids=["smaller-images", "flattened", "nan"],
)
def test_prediction_refuses_input_unlike_the_training_data(data, change, message):
    est = make().fit(*data)
    for method in (est.predict, est.predict_proba, est.transform):
        with pytest.raises(ValueError, match=message):
            method(change(data[0]))


def test_two_dimensional_inputs_name_the_feature_count():
    X = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    y = np.arange(40) % 2
    net = torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)
    )
    student = torch.nn.Sequential(
        torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)
    )
    est = ProjectorDistiller(net.eval(), student, **FAST).fit(X, y)
    assert est.n_features_in_ == 6
    with pytest.raises(
        ValueError, match="X has 5 features, but ProjectorDistiller is expecting 6"
    ):
        est.predict(X[:, :5])


def test_bad_input_leaves_the_users_objects_alone(data):
    X, y = data
    X_nan, _ = with_nan(X, y)
    X_copy = X_nan.copy()
    teacher = DigitsCNN(width=8, n_features=32).eval()
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    with pytest.raises(ValueError):
        make(teacher=teacher).fit(X_nan, y)
    np.testing.assert_array_equal(X_nan, X_copy)
    assert all(torch.equal(teacher.state_dict()[k], v) for k, v in state.items())


@pytest.mark.parametrize("size", [1, 7, -1, np.int64(16)])
def test_valid_batch_sizes_are_accepted(data, size):
    X, y = data
    est = make(max_epochs=1, batch_size=size, iterator_train__batch_size=size)
    assert est.fit(X, y).predict(X[:3]).shape == (3,)


@pytest.mark.parametrize(
    "weights",
    [
        {"ce_weight": 1, "kd_weight": 0, "feature_weight": 0},
        {"ce_weight": 0, "kd_weight": 0.5, "feature_weight": 0},
        {"ce_weight": 0, "kd_weight": 0, "feature_weight": 1e-3},
    ],
    ids=["ce", "kd", "feature"],
)
def test_one_positive_weight_is_enough_to_train(data, weights):
    est = make(max_epochs=1, **weights).fit(*data)
    assert np.isfinite(est.history[-1, "train_loss"])


def test_batch_size_set_after_construction_is_checked(data):
    est = make().set_params(batch_size=0)
    with pytest.raises(ValueError, match="'batch_size' parameter of ProjectorDist"):
        est.fit(*data)
