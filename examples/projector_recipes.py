"""
Searching the projector recipes: SRD, logit standardization and hints
=====================================================================

The feature term (PEFD's cosine or the normalised projector's SRD term),
logit standardization and hints at two stages are parameters like any
other: one ``GridSearchCV`` tries every combination on the same data, folds
and seeds, and keeps the best by cross-validation. Each feature term keeps
its authors' weight (25 for the cosine, 2 for SRD): a list of two grids.

Run: ``python examples/projector_recipes.py``
"""

import os

import torch
from sklearn.model_selection import GridSearchCV

from projkd import ProjectorDistiller
from projkd.data import load_digits
from projkd.models import DigitsCNN, digits_teacher
from projkd.teacher import train_teacher

EPOCHS = int(os.environ.get("PROJKD_EXAMPLE_EPOCHS", 8))

X, y = load_digits()
teacher = train_teacher(
    digits_teacher(),
    X,
    y,
    max_epochs=EPOCHS,
    optimizer=torch.optim.Adam,
    lr=3e-3,
    random_state=0,
)
# the first two blocks' ReLUs (8x8 maps), by their names in named_modules():
# the same names in the student and the teacher (both are DigitsCNN)
STAGES = [("features.2", "features.2"), ("features.5", "features.5")]
distiller = ProjectorDistiller(
    teacher,
    DigitsCNN,
    student__width=4,
    ce_weight=1.0,
    kd_weight=1.0,
    temperature=2.0,  # logit standardization's base temperature
    n_projectors=3,
    hint_weight=1.0,
    optimizer=torch.optim.Adam,
    lr=3e-3,
    max_epochs=EPOCHS,
    train_split=None,
    verbose=0,
    random_state=0,
)
common = {"logit_loss__standardize": [False, True], "hint_layers": [None, STAGES]}
grid = [
    {"feature_loss": ["cosine"], "feature_weight": [25.0], **common},
    {"feature_loss": ["srd"], "feature_weight": [2.0], **common},
]
search = GridSearchCV(distiller, grid, cv=3).fit(X, y)


def describe(params):
    """One candidate in a few words."""
    hints = "2 stages" if params["hint_layers"] else "none"
    standardize = "on" if params["logit_loss__standardize"] else "off"
    return f"feature {params['feature_loss']}, LS {standardize}, hints {hints}"


for params, score in zip(
    search.cv_results_["params"], search.cv_results_["mean_test_score"], strict=True
):
    print(f"{describe(params)}: accuracy {score:.3f}")
print("best:", describe(search.best_params_))

# %%
# The refitted best student's loss terms in its last epoch, unweighted:
# ``train_feat`` is the chosen feature term (``1 - cos`` or SRD's log), and
# ``train_hint``, recorded with hints, the mean over the stages.
last = search.best_estimator_.history[-1]
terms = [k for k in ("train_ce", "train_kd", "train_feat", "train_hint") if k in last]
print("last epoch:", ", ".join(f"{k} {last[k]:.4f}" for k in terms))
