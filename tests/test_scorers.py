import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from skorch.dataset import ValidSplit

from projkd import ProjectorDistiller
from projkd.callbacks import EpochCalibration, EpochCKA
from projkd.metrics import (
    SCORERS,
    MinibatchCKA,
    cka_scorer,
    ece_scorer,
    expected_calibration_error,
    linear_cka,
)
from projkd.models import DigitsCNN

from .conftest import FAST


@pytest.fixture
def estimator(teacher):
    return ProjectorDistiller(
        teacher, DigitsCNN, student__width=4, student__n_features=16, **FAST
    )


def test_scorers_match_the_metric_functions(estimator, small_digits):
    X, y = small_digits
    est = estimator.fit(X, y)
    proba = est.predict_proba(X)
    assert ece_scorer(est, X, y) == -expected_calibration_error(y, proba)
    assert cka_scorer(est, X) == linear_cka(est.transform(X), est.transform_teacher(X))
    assert 0 <= cka_scorer(est, X) <= 1


def test_ece_scorer_handles_string_labels_and_missing_classes(estimator, small_digits):
    X, y = small_digits
    labels = np.array([f"d{v}" for v in y])
    est = estimator.fit(X, labels)
    missing_one = labels != "d3"
    score = ece_scorer(est, X[missing_one], labels[missing_one])
    assert -1 <= score <= 0


def test_cka_scorer_on_a_pipeline(estimator, small_digits):
    X, y = small_digits
    pipe = Pipeline([("scale", FunctionTransformer(np.sqrt)), ("distil", estimator)])
    pipe.fit(X, y)
    expected = linear_cka(
        pipe[-1].transform(np.sqrt(X)), pipe[-1].transform_teacher(np.sqrt(X))
    )
    assert cka_scorer(pipe, X) == pytest.approx(expected)


def test_multi_metric_grid_search_reports_all_three(estimator, small_digits):
    search = GridSearchCV(
        estimator, {"n_projectors": [1, 3]}, scoring=SCORERS, refit="accuracy", cv=2
    ).fit(*small_digits)
    for name in SCORERS:
        scores = search.cv_results_[f"mean_test_{name}"]
        assert len(scores) == 2 and np.isfinite(scores).all(), name
    assert (search.cv_results_["mean_test_neg_expected_calibration_error"] <= 0).all()
    assert search.best_params_["n_projectors"] in (1, 3)


def test_epoch_callbacks_record_ece_and_cka_of_the_validation_set(
    teacher, small_digits
):
    X, y = small_digits
    est = ProjectorDistiller(
        teacher,
        DigitsCNN,
        student__width=4,
        student__n_features=16,
        **{**FAST, "train_split": ValidSplit(5, stratified=True), "batch_size": 20},
        callbacks=[
            EpochCalibration(n_bins=10),
            EpochCKA(),
            ("train_ece", EpochCalibration(name="train_ece", on_train=True)),
        ],
    ).fit(X, y)
    _, valid = next(StratifiedKFold(5).split(X, y))
    proba = est.predict_proba(X[valid])
    assert est.history[-1, "valid_ece"] == pytest.approx(
        expected_calibration_error(y[valid], proba, n_bins=10, labels=est.classes_)
    )
    expected = MinibatchCKA()
    student, teach = est.transform(X[valid]), est.transform_teacher(X[valid])
    for start in range(0, len(valid), 20):
        expected.update(student[start : start + 20], teach[start : start + 20])
    assert est.history[-1, "valid_cka"] == pytest.approx(expected.compute(), rel=1e-4)
    assert 0 <= est.history[-1, "train_ece"] <= 1
