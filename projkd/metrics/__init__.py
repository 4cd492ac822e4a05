"""Metrics of a distilled student: calibration (ECE) and similarity (CKA).

Plain functions on arrays or tensors, sklearn scorers that wrap them, and a
streaming :class:`MinibatchCKA` for data too large for Gram matrices.
"""

from ._calibration import (
    ReliabilityCurve,
    expected_calibration_error,
    overconfidence,
    reliability_curve,
)
from ._cka import MinibatchCKA, hsic, linear_cka, rbf_cka
from ._scorers import SCORERS, cka_scorer, ece_scorer

__all__ = [
    "SCORERS",
    "MinibatchCKA",
    "ReliabilityCurve",
    "cka_scorer",
    "ece_scorer",
    "expected_calibration_error",
    "hsic",
    "linear_cka",
    "overconfidence",
    "rbf_cka",
    "reliability_curve",
]
