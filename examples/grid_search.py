"""
Choosing ``n_projectors`` by cross-validation
=============================================

``n_projectors`` is a hyper-parameter like any other: a ``GridSearchCV``
scores every candidate on accuracy, calibration (ECE) and similarity to the
teacher (CKA) at once, refits the most accurate one, and the scores are
plotted against the number of projectors.

Run: ``python examples/grid_search.py``
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

# %%
# The three scores against the number of projectors (mean over the folds,
# bars one standard deviation), written to projkd-search/scores.png; needs
# matplotlib.
try:
    import matplotlib.pyplot as plt
except ImportError:  # pragma: no cover - the plot is optional
    plt = None
if plt is not None:
    ks = [p["n_projectors"] for p in search.cv_results_["params"]]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3), layout="constrained")
    for ax, key, label, sign in (
        (axes[0], "accuracy", "accuracy", 1),
        (axes[1], "neg_expected_calibration_error", "ECE", -1),
        (axes[2], "cka", "CKA with the teacher", 1),
    ):
        mean = sign * search.cv_results_[f"mean_test_{key}"]
        std = search.cv_results_[f"std_test_{key}"]
        ax.errorbar(ks, mean, yerr=std, marker="o", capsize=3)
        ax.set(xlabel="n_projectors", title=label, xticks=ks)
    fig.suptitle("3-fold cross-validation on the digits")
    os.makedirs("projkd-search", exist_ok=True)
    fig.savefig("projkd-search/scores.png", dpi=110)
    plt.close(fig)
    print("plot in projkd-search/scores.png")
