"""Distil a digits teacher into a small student and search over n_projectors.

Run: python examples/quickstart.py
"""

import torch
from sklearn.model_selection import GridSearchCV, train_test_split
from skorch import NeuralNetClassifier

from projkd import ProjectorDistiller
from projkd.data import load_digits
from projkd.models import DigitsCNN, digits_teacher

X, y = load_digits()
X_train, X_test, y_train, y_test = train_test_split(X, y, stratify=y, random_state=0)

# 1. A teacher: any trained nn.Module. Here, trained with plain skorch.
torch.manual_seed(0)
teacher_net = NeuralNetClassifier(
    digits_teacher(),
    criterion=torch.nn.CrossEntropyLoss,
    optimizer=torch.optim.Adam,
    lr=3e-3,
    max_epochs=20,
    train_split=None,
    verbose=0,
).fit(X_train, y_train)
teacher = teacher_net.module_.eval()
print(f"teacher test accuracy: {teacher_net.score(X_test, y_test):.3f}")

# 2. Distil it into a student with a narrower feature (32 vs 64) through 3 projectors.
student = ProjectorDistiller(
    teacher,
    DigitsCNN,
    student__width=4,
    student__n_features=32,
    n_projectors=3,
    optimizer=torch.optim.Adam,
    lr=3e-3,
    max_epochs=20,
    train_split=None,
    verbose=0,
    random_state=0,
).fit(X_train, y_train)
print(f"student test accuracy: {student.score(X_test, y_test):.3f}")

# 3. Choose n_projectors by cross-validation.
search = GridSearchCV(student, {"n_projectors": [1, 2, 3]}, cv=3).fit(X_train, y_train)
print("best:", search.best_params_, f"cv accuracy {search.best_score_:.3f}")
