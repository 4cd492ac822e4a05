"""
Comparing KD, DKD and DIST, with and without a logit projector
==============================================================

The logit loss is a parameter like any other: one ``GridSearchCV`` compares
Hinton's KD, decoupled KD (DKD) and DIST, each with and without a logit
projector, on the same data, folds and seeds.

Run: ``python examples/logit_losses.py``
"""

import os

import torch
from sklearn.model_selection import GridSearchCV

from projkd import ProjectorDistiller
from projkd.data import load_digits
from projkd.losses import DKDLoss
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
distiller = ProjectorDistiller(
    teacher,
    DigitsCNN,
    student__width=4,
    ce_weight=1.0,
    kd_weight=1.0,  # the weight of whichever logit loss is chosen
    feature_weight=0.0,
    n_projectors=0,
    optimizer=torch.optim.Adam,
    lr=3e-3,
    max_epochs=EPOCHS,
    train_split=None,
    verbose=0,
    random_state=0,
)
grid = {
    "logit_loss": ["kd", DKDLoss(beta=6.0), "dist"],
    "logit_projector": [False, True],
}
search = GridSearchCV(distiller, grid, cv=3).fit(X, y)
for params, score in zip(
    search.cv_results_["params"], search.cv_results_["mean_test_score"], strict=True
):
    print(f"{params}: accuracy {score:.3f}")
print("best:", search.best_params_)

# %%
# The history of the refitted best student records its logit loss's parts,
# e.g. DKD's target (``train_tckd``) and non-target (``train_nckd``) terms.
last = search.best_estimator_.history[-1]
print(", ".join(f"{k} {v:.4f}" for k, v in last.items() if k.startswith("train_")))
