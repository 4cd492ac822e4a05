import numpy as np
import pytest
from sklearn.base import clone, is_classifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from projkd import ProjectorDistiller
from projkd.models import DigitsCNN

from .conftest import FAST


@pytest.fixture
def estimator(teacher):
    return ProjectorDistiller(
        teacher, DigitsCNN, student__width=4, student__n_features=16, **FAST
    )


def test_is_a_classifier_with_the_documented_params(estimator):
    assert is_classifier(estimator)
    params = estimator.get_params()
    for name in (
        "teacher",
        "student",
        "n_projectors",
        "projector",
        "feature_weight",
        "kd_weight",
        "ce_weight",
        "temperature",
        "logit_projector",
        "logit_projector_init",
        "teacher_layer",
        "student_layer",
        "random_state",
        "student__width",
        "max_epochs",
        "lr",
    ):
        assert name in params, name
    assert "module" not in params  # the student is the skorch module


def test_clone_is_unfitted_and_keeps_params(estimator, small_digits):
    estimator.set_params(n_projectors=2, kd_weight=0.5)
    estimator.fit(*small_digits)
    copy = clone(estimator)
    assert not hasattr(copy, "module_")
    assert copy.get_params()["n_projectors"] == 2
    assert copy.get_params()["kd_weight"] == 0.5
    assert copy.get_params()["student__width"] == 4


def test_grid_search_over_n_projectors(estimator, small_digits):
    search = GridSearchCV(estimator, {"n_projectors": [1, 2, 3]}, cv=3).fit(
        *small_digits
    )
    assert len(search.cv_results_["mean_test_score"]) == 3
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_params_["n_projectors"] in (1, 2, 3)
    assert (
        len(search.best_estimator_.projectors_) == search.best_params_["n_projectors"]
    )


def _scale(X):
    return X * 2.0 - 1.0


def test_last_step_of_a_pipeline_in_cross_val_score(estimator, small_digits):
    pipe = Pipeline([("scale", FunctionTransformer(_scale)), ("distil", estimator)])
    scores = cross_val_score(pipe, *small_digits, cv=3)
    assert scores.shape == (3,) and ((scores >= 0) & (scores <= 1)).all()


def test_embeds_inputs_as_a_middle_step(estimator, small_digits):
    X, y = small_digits
    pipe = Pipeline([("distil", estimator), ("head", LogisticRegression(max_iter=200))])
    pipe.fit(X, y)
    assert pipe.named_steps["head"].coef_.shape == (10, 16)
    assert pipe.predict(X).shape == (len(X),)
