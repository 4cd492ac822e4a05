"""The projector methods since the paper, in the estimator: logit
standardization, the normalised (SRD) feature term, and their searches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.model_selection import GridSearchCV

from projkd import ProjectorDistiller
from projkd.losses import DKDLoss, SRDLoss, srd_loss
from projkd.models import DigitsCNN

from .conftest import FAST


def distiller(teacher, **params):
    settings = dict(FAST, student__width=4, random_state=0)
    return ProjectorDistiller(teacher, DigitsCNN, **{**settings, **params})


@pytest.mark.parametrize(
    "params",
    [
        dict(
            kd_weight=9.0, ce_weight=0.1, temperature=2.0, logit_loss__standardize=True
        ),
        dict(kd_weight=1.0, logit_loss="dkd", logit_loss__standardize=True),
        dict(kd_weight=1.0, logit_loss=DKDLoss(beta=6.0, standardize=True)),
        dict(kd_weight=1.0, logit_loss="dist", logit_loss__standardize=True),
    ],
    ids=["kd", "dkd", "dkd-object", "dist"],
)
def test_logit_standardization_fits(small_digits, teacher, params):
    est = distiller(teacher, feature_weight=0.0, **params).fit(*small_digits)
    assert est.logit_loss_.loss.standardize is True
    assert np.isfinite(est.history[-1, "train_kd"])


def test_the_srd_feature_term_is_the_function_on_the_projections(small_digits, teacher):
    seen = []

    class Watch(torch.nn.Module):
        def forward(self, projected, teacher_features):
            seen.append(srd_loss(projected, teacher_features))
            return seen[-1]

    X, y = small_digits
    est = distiller(teacher, feature_loss="srd", feature_weight=2.0).fit(X, y)
    assert isinstance(est.feature_loss_, SRDLoss)
    assert np.isfinite(est.history[-1, "train_feat"])
    # a callable of one's own takes the same two arguments
    distiller(teacher, feature_loss=Watch(), feature_weight=2.0).fit(X, y)
    assert len(seen) > 2  # the probe, then every batch
    tuned = distiller(teacher, feature_loss="srd", feature_loss__eps=1e-2).fit(X, y)
    assert tuned.feature_loss_ == SRDLoss(eps=1e-2)


def test_a_feature_loss_of_the_wrong_signature_is_refused_before_training(
    small_digits, teacher
):
    with pytest.raises(ValueError, match="feature_loss"):
        distiller(teacher, feature_loss=lambda projected: projected.sum()).fit(
            *small_digits
        )


def test_srd_drops_a_last_batch_of_one(small_digits, teacher):
    X, y = small_digits
    with pytest.warns(UserWarning, match="hold 1 of 129 samples"):
        est = distiller(teacher, feature_loss="srd", batch_size=64).fit(
            X[:129], y[:129]
        )
    assert [row["train_batch_size"] for row in est.history[-1, "batches"]] == [64, 64]


def test_a_grid_over_the_projector_recipes(small_digits, teacher):
    grid = {
        "feature_loss": ["cosine", "srd"],
        "n_projectors": [1, 3],
        "logit_loss__standardize": [False, True],
    }
    est = distiller(teacher, kd_weight=1.0, max_epochs=1)
    search = GridSearchCV(est, grid, cv=2).fit(*small_digits)
    assert len(search.cv_results_["mean_test_score"]) == 8
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
