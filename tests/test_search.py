"""Searches: shared teachers, teachers fitted per fold, parallel engines."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import (
    GridSearchCV,
    KFold,
    RandomizedSearchCV,
    cross_val_score,
    cross_validate,
)
from skorch import NeuralNetClassifier

from projkd import ProjectorDistiller
from projkd.metrics import SCORERS
from projkd.models import DigitsCNN

from .conftest import FAST


def make(teacher, **params):
    kwargs = dict(FAST, student=DigitsCNN, student__width=4, student__n_features=16)
    kwargs.update(random_state=0, **params)
    return ProjectorDistiller(teacher, **kwargs)


class RecordingTeacherNet(NeuralNetClassifier):
    """A skorch teacher that remembers the samples it was fitted on."""

    fitted_on: list = []

    def fit(self, X, y=None, **fit_params):
        type(self).fitted_on.append(np.asarray(X).reshape(len(X), -1).copy())
        return super().fit(X, y, **fit_params)


@pytest.fixture
def teacher_estimator():
    RecordingTeacherNet.fitted_on = []
    return RecordingTeacherNet(
        DigitsCNN,
        module__width=8,
        module__n_features=32,
        criterion=torch.nn.CrossEntropyLoss,
        **FAST,
    )


def test_clones_share_the_teacher(teacher):
    est = make(teacher)
    copy = clone(est)
    assert copy.teacher is est.teacher
    assert copy.get_params()["student__width"] == 4
    assert not hasattr(copy, "module_")


def test_an_unfitted_teacher_estimator_is_fitted_per_fit_and_left_alone(
    teacher_estimator, small_digits
):
    est = make(teacher_estimator).fit(*small_digits)
    assert not hasattr(teacher_estimator, "module_")  # the user's object: unfitted
    assert est.teacher_estimator_.module_ is not None
    assert not est.teacher_.training
    assert len(RecordingTeacherNet.fitted_on) == 1


def test_teacher_estimator_in_cross_validation_never_sees_the_test_fold(
    teacher_estimator, small_digits
):
    X, y = small_digits
    folds = list(KFold(3).split(X))
    cross_val_score(make(teacher_estimator), X, y, cv=folds)
    assert len(RecordingTeacherNet.fitted_on) == 3
    rows = X.reshape(len(X), -1)
    for seen, (_, test) in zip(RecordingTeacherNet.fitted_on, folds, strict=True):
        seen_rows = {row.tobytes() for row in seen}
        assert not any(rows[i].tobytes() in seen_rows for i in test)


def test_candidates_sharing_a_fold_share_its_teacher(teacher_estimator, small_digits):
    search = GridSearchCV(make(teacher_estimator), {"n_projectors": [1, 2, 3]}, cv=2)
    search.fit(*small_digits)
    assert len(RecordingTeacherNet.fitted_on) == 2 + 1  # one per fold, one refit


def test_teacher_parameters_are_routed_to_the_teacher_estimator(
    teacher_estimator, small_digits
):
    est = make(teacher_estimator, teacher__max_epochs=1).fit(*small_digits)
    assert len(est.teacher_estimator_.history) == 1


def test_a_fitted_skorch_net_is_used_as_it_is(small_digits):
    net = NeuralNetClassifier(
        DigitsCNN(width=8, n_features=32), criterion=torch.nn.CrossEntropyLoss, **FAST
    ).fit(*small_digits)
    training = net.module_.training
    est = make(net).fit(*small_digits)
    assert est.teacher_estimator_ is net
    assert net.module_.training == training  # left as it was
    for key, value in net.module_.state_dict().items():
        assert torch.equal(est.teacher_.state_dict()[key], value)


def test_randomized_search_and_multi_metric_cross_validate(teacher, small_digits):
    X, y = small_digits
    search = RandomizedSearchCV(
        make(teacher),
        {"n_projectors": [1, 2, 3], "feature_weight": [1.0, 25.0]},
        n_iter=3,
        cv=2,
        random_state=0,
    ).fit(X, y)
    assert len(search.cv_results_["params"]) == 3
    result = cross_validate(
        make(teacher), X, y, cv=2, scoring=SCORERS, return_estimator=True
    )
    for name in SCORERS:
        assert np.isfinite(result[f"test_{name}"]).all()


def serial_and_parallel(teacher, X, y, **search_params):
    grid = {"n_projectors": [1, 3], "feature_weight": [1.0, 25.0]}
    serial = GridSearchCV(make(teacher), grid, cv=2).fit(X, y)
    parallel = GridSearchCV(make(teacher), grid, cv=2, **search_params)
    return serial, parallel


def test_loky_search_equals_the_serial_one(teacher, small_digits):
    serial, parallel = serial_and_parallel(teacher, *small_digits, n_jobs=2)
    parallel.fit(*small_digits)
    np.testing.assert_allclose(
        parallel.cv_results_["mean_test_score"], serial.cv_results_["mean_test_score"]
    )


def test_dask_backend_search_equals_the_serial_one(teacher, small_digits):
    distributed = pytest.importorskip("dask.distributed")
    from joblib import parallel_backend

    serial, parallel = serial_and_parallel(teacher, *small_digits, n_jobs=-1)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
        parallel_backend("dask"),
    ):
        parallel.fit(*small_digits)
    np.testing.assert_allclose(
        parallel.cv_results_["mean_test_score"], serial.cv_results_["mean_test_score"]
    )
