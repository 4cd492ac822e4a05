"""scikit-learn scorers for accuracy, calibration and similarity to the teacher."""

from __future__ import annotations

from typing import Any

from sklearn.metrics import get_scorer
from sklearn.pipeline import Pipeline

from ._calibration import expected_calibration_error
from ._cka import linear_cka

__all__ = ["SCORERS", "cka_scorer", "ece_scorer"]


def ece_scorer(estimator: Any, X: Any, y: Any) -> float:
    """Negated expected calibration error (15 bins): greater is better.

    Columns of ``predict_proba`` are matched to ``estimator.classes_``, so a
    fold that misses a class still scores correctly.

    Parameters
    ----------
    estimator : fitted classifier with ``predict_proba`` and ``classes_``
    X : array-like
    y : array-like of shape (n_samples,)

    Returns
    -------
    score : float in [-1, 0]
    """
    proba = estimator.predict_proba(X)
    return -expected_calibration_error(y, proba, labels=estimator.classes_)


def cka_scorer(estimator: Any, X: Any, y: Any = None) -> float:
    """Linear CKA between the student's and the teacher's features on ``X``.

    Works on a fitted :class:`~projkd.ProjectorDistiller` and on a
    :class:`~sklearn.pipeline.Pipeline` that ends with one (the earlier steps
    transform ``X`` first).

    Parameters
    ----------
    estimator : ProjectorDistiller or Pipeline
    X : array-like
    y : ignored

    Returns
    -------
    score : float in [0, 1]
    """
    if isinstance(estimator, Pipeline):
        X = estimator[:-1].transform(X)
        estimator = estimator[-1]
    return linear_cka(estimator.transform(X), estimator.transform_teacher(X))


SCORERS: dict[str, Any] = {
    "accuracy": get_scorer("accuracy"),
    "neg_expected_calibration_error": ece_scorer,
    "cka": cka_scorer,
}
"""Pass as ``scoring=`` to GridSearchCV (with ``refit="accuracy"``)."""
