"""
The distiller in a scikit-learn Pipeline
========================================

As the last step it classifies; as a middle step it embeds inputs into the
student's penultimate features for another estimator.

Run: ``python examples/pipeline.py``
"""

import os

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from projkd import ProjectorDistiller
from projkd.data import load_digits
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


def distiller():
    return ProjectorDistiller(
        teacher,
        DigitsCNN,
        student__width=4,
        optimizer=torch.optim.Adam,
        lr=3e-3,
        max_epochs=EPOCHS,
        train_split=None,
        verbose=0,
        random_state=0,
    )


def center(images):
    return images - 0.5


classify = make_pipeline(FunctionTransformer(center), distiller())
print("distiller as classifier:", np.round(cross_val_score(classify, X, y, cv=3), 3))

embed = make_pipeline(distiller(), LogisticRegression(max_iter=1000))
print(
    "student features + logistic regression:",
    np.round(cross_val_score(embed, X, y, cv=3), 3),
)
