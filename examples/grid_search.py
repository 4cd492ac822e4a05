"""Choose n_projectors by cross-validation, scoring accuracy, ECE and CKA.

Run: python examples/grid_search.py
"""

import os

import torch
from sklearn.model_selection import GridSearchCV

from projkd import ProjectorDistiller
from projkd.data import load_digits
from projkd.metrics import SCORERS
from projkd.models import DigitsCNN, digits_teacher
from projkd.teacher import train_teacher

EPOCHS = int(os.environ.get("PROJKD_EXAMPLE_EPOCHS", 15))

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
# (for a leak-free estimate, pass an unfitted skorch net as the teacher: it is
# then trained on each fold's training data only)
distiller = ProjectorDistiller(
    teacher,
    DigitsCNN,
    student__width=4,
    student__n_features=32,
    optimizer=torch.optim.Adam,
    lr=3e-3,
    max_epochs=EPOCHS,
    train_split=None,
    verbose=0,
    random_state=0,
)
search = GridSearchCV(
    distiller, {"n_projectors": [1, 2, 3, 4]}, scoring=SCORERS, refit="accuracy", cv=3
).fit(X, y)

for params, acc, ece, cka in zip(
    search.cv_results_["params"],
    search.cv_results_["mean_test_accuracy"],
    -search.cv_results_["mean_test_neg_expected_calibration_error"],
    search.cv_results_["mean_test_cka"],
    strict=True,
):
    print(f"{params}: accuracy {acc:.3f}, ECE {ece:.3f}, CKA {cka:.3f}")
print("best:", search.best_params_)
