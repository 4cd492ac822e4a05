"""
A first distillation: fit, predict, score
=========================================

Train a teacher on the built-in digits, distil it into a smaller student
through an ensemble of three projectors, and use the student as any
scikit-learn classifier.

Run: ``python examples/quickstart.py``
"""

import os

import torch
from sklearn.model_selection import train_test_split

from projkd import ProjectorDistiller
from projkd.data import load_digits
from projkd.models import DigitsCNN, digits_teacher
from projkd.teacher import train_teacher

EPOCHS = int(os.environ.get("PROJKD_EXAMPLE_EPOCHS", 20))

X, y = load_digits()  # (1797, 1, 8, 8) float32 images, labels 0-9
X_train, X_test, y_train, y_test = train_test_split(X, y, stratify=y, random_state=0)

# A teacher: any trained nn.Module. Here a 64-feature CNN trained with skorch.
teacher = train_teacher(
    digits_teacher(),
    X_train,
    y_train,
    max_epochs=EPOCHS,
    optimizer=torch.optim.Adam,
    lr=3e-3,
    random_state=0,
)

# A student with a narrower feature (32 vs 64), distilled through 3 projectors.
student = ProjectorDistiller(
    teacher,
    DigitsCNN,
    student__width=4,
    student__n_features=32,
    n_projectors=3,
    optimizer=torch.optim.Adam,
    lr=3e-3,
    max_epochs=EPOCHS,
    train_split=None,
    verbose=0,
    random_state=0,
).fit(X_train, y_train)

print("predicted:", student.predict(X_test[:10]))
print("true:     ", y_test[:10])
print(f"student test accuracy: {student.score(X_test, y_test):.3f}")
print(
    "loss terms of the last epoch:",
    {k: round(student.history[-1, k], 4) for k in ("train_ce", "train_feat")},
)
