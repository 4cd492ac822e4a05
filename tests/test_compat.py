"""What projkd 0.1.0 wrote or imported keeps working after modules moved."""

from __future__ import annotations

import importlib
import pickle
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import projkd

DATA = Path(__file__).parent / "data"


def test_an_estimator_pickled_by_0_1_0_unpickles_and_predicts_the_same():
    # made by the script in tests/data/README.md before the move: a fitted
    # distiller with a feature tap on its student (projkd.compiling.FeatureTap),
    # fused projectors, a logit projector and EpochCalibration/EpochCKA callbacks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with open(DATA / "distiller_0.1.0.pkl", "rb") as f:
            est = pickle.load(f)
    expected = np.load(DATA / "distiller_0.1.0.npz")
    X = expected["X"]
    # the same to float32 rounding: the file was written by another torch,
    # whose kernels may round a last bit differently
    np.testing.assert_allclose(est.predict_proba(X), expected["proba"], rtol=1e-6)
    np.testing.assert_allclose(
        est.transform(X), expected["features"], rtol=1e-5, atol=1e-6
    )
    assert len(est.projectors_) == 2 and est.history[-1, "train_cka"] > 0
    est.partial_fit(X, est.classes_[expected["proba"].argmax(1)])  # trains on
    assert len(est.history) == 4


@pytest.mark.parametrize("old, new", sorted(projkd.MOVED_MODULES.items()))
def test_an_old_module_name_imports_the_new_module_with_a_warning(
    old, new, monkeypatch
):
    monkeypatch.delitem(sys.modules, old, raising=False)  # imported before
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
