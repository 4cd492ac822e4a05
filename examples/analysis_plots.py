"""
The paper's three analyses as plots
===================================

A student distilled without a projector and one with three, compared the three
ways the paper does: the train/test gap, similarity to the teacher (CKA) and
calibration (ECE). Prints the table and writes three plots to
``projkd-analysis/``: reliability diagrams, a layer-by-layer CKA heatmap of
the 3-projector student against the teacher, and accuracy curves.

Run: ``python examples/analysis_plots.py`` (needs matplotlib:
``pip install 'projkd[plot]'``).
"""

import os
import sys
from pathlib import Path

import torch
from sklearn.model_selection import train_test_split
from skorch.dataset import ValidSplit

from projkd import ProjectorDistiller
from projkd.analysis import (
    MarkdownTable,
    compare,
    format_markdown,
    plot_accuracy_curves,
    plot_cka_heatmap,
    plot_reliability_diagrams,
)
from projkd.data import load_digits
from projkd.models import digits_student, digits_teacher
from projkd.teacher import train_teacher

EPOCHS = int(os.environ.get("PROJKD_EXAMPLE_EPOCHS", 20))
OUT = Path("projkd-analysis")

X, y = load_digits()
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.5, stratify=y, random_state=0
)
teacher = train_teacher(
    digits_teacher(),
    X_train,
    y_train,
    max_epochs=EPOCHS,
    optimizer=torch.optim.Adam,
    lr=3e-3,
    random_state=0,
)
students = {
    name: ProjectorDistiller(
        teacher,
        digits_student(),
        n_projectors=k,
        optimizer=torch.optim.Adam,
        lr=3e-3,
        max_epochs=EPOCHS,
        train_split=ValidSplit(5),
        verbose=0,
        random_state=0,
    ).fit(X_train, y_train)
    for name, k in (("no projector", 0), ("3 projectors", 3))
}

# 1. train/test gap, 2. CKA with the teacher, 3. calibration
table = MarkdownTable(
    format_markdown(compare(students, X_train, y_train, X_test, y_test))
)
if sys.stdout.isatty():  # a terminal: the printed form; the gallery renders it
    print(table)
table  # noqa: B018  (sphinx-gallery renders a cell's last expression)

# %%

plain = students["no projector"]
plot_reliability_diagrams(
    {
        "teacher": (y_test, plain.predict_proba_teacher(X_test)),
        **{name: (y_test, s.predict_proba(X_test)) for name, s in students.items()},
    },
    OUT / "reliability.png",
)
plot_cka_heatmap(students["3 projectors"].module_, teacher, X_test, OUT / "cka.png")
plot_accuracy_curves({n: s.history for n, s in students.items()}, OUT / "accuracy.png")
print(f"plots in {OUT}/")
