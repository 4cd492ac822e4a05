"""Top-label calibration: ECE, MCE, RMS calibration error, reliability curves."""

from __future__ import annotations

from numbers import Integral
from typing import Any, NamedTuple

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from ..errors import InputError
from ._checks import as_numpy

__all__ = [
    "ReliabilityCurve",
    "calibration_bins",
    "calibration_error_from_bins",
    "expected_calibration_error",
    "overconfidence",
    "reliability_curve",
    "top_label",
]

_ROW_SUM_TOLERANCE = 1e-4
_N_BINS = [Interval(Integral, 1, None, closed="left")]


class ReliabilityCurve(NamedTuple):
    """Per-bin statistics of top-label confidence, as a reliability diagram draws.

    Attributes
    ----------
    edges : ndarray of shape (n_bins + 1,)
        Bin edges; bin ``m`` holds confidences in ``(edges[m], edges[m + 1]]``.
    confidence : ndarray of shape (n_bins,)
        Mean confidence per bin (NaN where empty).
    accuracy : ndarray of shape (n_bins,)
        Accuracy per bin (NaN where empty).
    counts : ndarray of shape (n_bins,)
        Samples per bin.
    """

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray


def top_label(
    y_true: Any, y_prob: Any, labels: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-label confidence and correctness of each prediction.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    y_prob : array-like of shape (n_samples, n_classes) or (n_samples,)
        Probabilities, columns in the order of ``labels``; a 1-D array is
        P(positive) of a binary problem (``labels[1]`` is the positive class).
    labels : array-like of shape (n_classes,) or None, default=None
        The class of each column; ``None`` uses the sorted unique ``y_true``.

    Returns
    -------
    confidence : ndarray of shape (n_samples,)
        ``max_j p_ij`` (``max(p, 1 - p)`` for binary input).
    correct : ndarray of shape (n_samples,), bool
        Whether the most probable class is the true one.
    """
    y_true = as_numpy(y_true)
    y_prob = as_numpy(y_prob).astype(np.float64, copy=False)
    if y_true.ndim != 1:
        raise InputError(f"y_true must be 1-D, got shape {y_true.shape}.")
    if y_prob.ndim not in (1, 2):
        raise InputError(f"y_prob must be 1-D or 2-D, got shape {y_prob.shape}.")
    if len(y_true) != len(y_prob):
        raise InputError(
            f"y_true has {len(y_true)} samples but y_prob has {len(y_prob)}."
        )
    if len(y_true) == 0:
        raise InputError("y_true and y_prob are empty.")
    if not np.isfinite(y_prob).all():
        raise InputError("y_prob contains NaN or infinity.")
    if y_prob.min() < 0 or y_prob.max() > 1:
        raise InputError(
            f"y_prob must hold probabilities in [0, 1]; got values in "
            f"[{y_prob.min():.4g}, {y_prob.max():.4g}]."
        )
    if y_prob.ndim == 1:
        y_prob = np.column_stack([1.0 - y_prob, y_prob])
    else:
        row_sums = y_prob.sum(axis=1)
        worst = np.abs(row_sums - 1.0).max()
        if worst > _ROW_SUM_TOLERANCE:
            raise InputError(
                f"The rows of y_prob must sum to 1; one sums to "
                f"{row_sums[np.abs(row_sums - 1.0).argmax()]:.6g}. Pass probabilities "
                "(e.g. predict_proba), not scores."
            )
    labels = _labels(y_true, y_prob.shape[1], labels)
    unknown = ~np.isin(y_true, labels)
    if unknown.any():
        raise InputError(
            f"y_true contains labels not in labels={list(labels)}: "
            f"{sorted({str(v) for v in y_true[unknown]})[:5]}."
        )
    predicted = labels[y_prob.argmax(axis=1)]
    return y_prob.max(axis=1), predicted == y_true


def _labels(y_true: np.ndarray, n_columns: int, labels: Any) -> np.ndarray:
    if labels is None:
        labels = np.unique(y_true)
        if len(labels) != n_columns:
            raise InputError(
                f"y_prob has {n_columns} columns but y_true holds {len(labels)} "
                "distinct labels; pass labels= naming the class of each column "
                "(e.g. labels=estimator.classes_)."
            )
        return labels
    labels = as_numpy(labels)
    if len(labels) != n_columns:
        raise InputError(
            f"labels has {len(labels)} entries but y_prob has {n_columns} columns."
        )
    if len(np.unique(labels)) != len(labels):
        raise InputError(f"labels={list(labels)} contains duplicates.")
    return labels


def calibration_bins(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample count, confidence sum and correct count in each equal-width bin.

    Bins are right-closed, ``(m / M, (m + 1) / M]``, as in Guo et al. (2017).
    Sums (not means) so that batches can be accumulated.
    """
    inner_edges = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    index = np.searchsorted(inner_edges, confidence, side="left")
    count = np.bincount(index, minlength=n_bins).astype(np.float64)
    confidence_sum = np.bincount(index, weights=confidence, minlength=n_bins)
    correct_sum = np.bincount(
        index, weights=correct.astype(np.float64), minlength=n_bins
    )
    return count, confidence_sum, correct_sum


def calibration_error_from_bins(
    count: np.ndarray, confidence_sum: np.ndarray, correct_sum: np.ndarray, norm: str
) -> float:
    """The calibration error of binned sums (see :func:`calibration_bins`)."""
    filled = count > 0
    gap = np.abs(correct_sum[filled] - confidence_sum[filled]) / count[filled]
    weight = count[filled] / count.sum()
    if norm == "l1":
        return float(np.sum(weight * gap))
    if norm == "l2":
        return float(np.sqrt(np.sum(weight * gap**2)))
    return float(gap.max())


@validate_params(
    {
        "y_true": ["array-like"],
        "y_prob": ["array-like"],
        "n_bins": _N_BINS,
        "norm": [StrOptions({"l1", "l2", "max"})],
        "labels": ["array-like", None],
    },
    prefer_skip_nested_validation=True,
)
def expected_calibration_error(
    y_true: Any, y_prob: Any, *, n_bins: int = 15, norm: str = "l1", labels: Any = None
) -> float:
    """Top-label calibration error with equal-width bins.

    ``ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|`` over ``n_bins`` bins of
    the top-label confidence (Guo et al., 2017).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels (any type: integers, strings).
    y_prob : array-like of shape (n_samples, n_classes) or (n_samples,)
        Predicted probabilities; a 1-D array is P(positive) of a binary
        problem.
    n_bins : int, default=15
    norm : {"l1", "l2", "max"}, default="l1"
        ``"l1"``: the ECE; ``"l2"``: root of the bin-weighted squared gaps
        (RMS calibration error); ``"max"``: the largest gap over non-empty
        bins (MCE).
    labels : array-like of shape (n_classes,) or None, default=None
        The class of each column of ``y_prob``; needed when ``y_true`` misses
        a class (a cross-validation fold, say). ``None`` uses the sorted
        unique ``y_true``.

    Returns
    -------
    error : float in [0, 1]

    References
    ----------
    Guo, Pleiss, Sun, Weinberger. "On Calibration of Modern Neural Networks",
    ICML 2017, arXiv:1706.04599.

    Examples
    --------
    >>> y_prob = [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]  # confident, right, wrong
    >>> round(expected_calibration_error([0, 1, 1], y_prob), 6)  # (0.1 + 0.2 + 0.6) / 3
    0.3
    """
    confidence, correct = top_label(y_true, y_prob, labels)
    return calibration_error_from_bins(
        *calibration_bins(confidence, correct, n_bins), norm
    )


@validate_params(
    {
        "y_true": ["array-like"],
        "y_prob": ["array-like"],
        "n_bins": _N_BINS,
        "labels": ["array-like", None],
    },
    prefer_skip_nested_validation=True,
)
def reliability_curve(
    y_true: Any, y_prob: Any, *, n_bins: int = 15, labels: Any = None
) -> ReliabilityCurve:
    """Per-bin mean confidence, accuracy and count of the top label.

    Parameters
    ----------
    y_true, y_prob, n_bins, labels
        As in :func:`expected_calibration_error`.

    Returns
    -------
    curve : ReliabilityCurve
        ``edges``, ``confidence``, ``accuracy`` (NaN for empty bins), ``counts``.

    Examples
    --------
    >>> curve = reliability_curve([0, 1], [[0.9, 0.1], [0.3, 0.7]], n_bins=2)
    >>> curve.counts.tolist(), curve.accuracy.tolist()
    ([0, 2], [nan, 1.0])
    """
    confidence, correct = top_label(y_true, y_prob, labels)
    count, confidence_sum, correct_sum = calibration_bins(confidence, correct, n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ReliabilityCurve(
            edges=np.linspace(0.0, 1.0, n_bins + 1),
            confidence=np.where(count > 0, confidence_sum / count, np.nan),
            accuracy=np.where(count > 0, correct_sum / count, np.nan),
            counts=count.astype(np.int64),
        )


@validate_params(
    {
        "y_true": ["array-like"],
        "y_prob": ["array-like"],
        "labels": ["array-like", None],
    },
    prefer_skip_nested_validation=True,
)
def overconfidence(y_true: Any, y_prob: Any, *, labels: Any = None) -> float:
    """Mean top-label confidence minus accuracy (positive: over-confident).

    Parameters
    ----------
    y_true, y_prob, labels
        As in :func:`expected_calibration_error`.

    Returns
    -------
    overconfidence : float in [-1, 1]

    Examples
    --------
    >>> round(overconfidence([0, 1], [[0.9, 0.1], [0.8, 0.2]]), 6)  # 0.85 - 0.5
    0.35
    """
    confidence, correct = top_label(y_true, y_prob, labels)
    return float(confidence.mean() - correct.mean())
