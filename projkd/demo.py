"""The demo: distil a digits teacher five ways and compare the students."""

from __future__ import annotations

import sys
from typing import Any, TextIO

import torch
from sklearn.model_selection import train_test_split
from skorch import NeuralNetClassifier
from tqdm.auto import tqdm

from .data import load_digits
from .distiller import ProjectorDistiller
from .models import digits_student, digits_teacher

__all__ = ["VARIANTS", "format_table", "run_demo"]

# name -> ProjectorDistiller parameters. The student's feature width equals the
# teacher's, so feature distillation without a projector applies.
VARIANTS: dict[str, dict[str, Any]] = {
    "student alone": dict(
        ce_weight=1.0, kd_weight=0.0, feature_weight=0.0, n_projectors=0
    ),
    "KD": dict(ce_weight=0.1, kd_weight=0.9, feature_weight=0.0, n_projectors=0),
    "feature, no projector": dict(n_projectors=0),
    "feature, 1 projector": dict(n_projectors=1),
    "feature, 3 projectors": dict(n_projectors=3),
}

_TRAINING: dict[str, Any] = dict(
    optimizer=torch.optim.Adam, lr=3e-3, batch_size=64, train_split=None, verbose=0
)


def run_demo(
    *, epochs: int = 30, random_state: int = 0, progress: bool = True
) -> list[dict[str, Any]]:
    """Train a teacher on digits, then distil a smaller student five ways.

    Parameters
    ----------
    epochs : int, default=30
        Training epochs of the teacher and of each student.
    random_state : int, default=0
        Seeds the split, the teacher and the students.
    progress : bool, default=True
        Show a progress bar on standard error.

    Returns
    -------
    rows : list of dict
        One per model (the teacher first) with ``model``, ``train_acc``,
        ``test_acc`` and ``gap`` (train minus test accuracy).
    """
    X, y = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.5, stratify=y, random_state=random_state
    )
    bar = tqdm(total=1 + len(VARIANTS), disable=not progress, desc="projkd demo")

    bar.set_postfix_str("teacher")
    torch.manual_seed(random_state)
    teacher_net = NeuralNetClassifier(
        digits_teacher(),
        criterion=torch.nn.CrossEntropyLoss,
        max_epochs=epochs,
        **_TRAINING,
    ).fit(X_train, y_train)
    teacher = teacher_net.module_.eval()
    rows = [_row("teacher", teacher_net, X_train, y_train, X_test, y_test)]
    bar.update()

    for name, params in VARIANTS.items():
        bar.set_postfix_str(name)
        student = ProjectorDistiller(
            teacher,
            digits_student(),
            max_epochs=epochs,
            random_state=random_state,
            **params,
            **_TRAINING,
        ).fit(X_train, y_train)
        rows.append(_row(name, student, X_train, y_train, X_test, y_test))
        bar.update()
    bar.close()
    return rows


def _row(name: str, estimator: Any, X_train, y_train, X_test, y_test) -> dict[str, Any]:
    train_acc = estimator.score(X_train, y_train)
    test_acc = estimator.score(X_test, y_test)
    return {
        "model": name,
        "train_acc": train_acc,
        "test_acc": test_acc,
        "gap": train_acc - test_acc,
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table, accuracies in percent."""
    lines = ["| model | train acc | test acc | gap |", "|---|---:|---:|---:|"]
    for row in rows:
        cells = [100 * row[k] for k in ("train_acc", "test_acc", "gap")]
        lines.append(
            f"| {row['model']} | " + " | ".join(f"{c:.2f}" for c in cells) + " |"
        )
    return "\n".join(lines)


def main(epochs: int = 30, random_state: int = 0, out: TextIO | None = None) -> int:
    """Run the demo and print its table (to ``out``, standard output by default)."""
    out = sys.stdout if out is None else out
    rows = run_demo(epochs=epochs, random_state=random_state)
    print(format_table(rows), file=out)
    best = max(rows[1:], key=lambda row: row["test_acc"])
    print(
        f"\nBest student: {best['model']} "
        f"({100 * best['test_acc']:.2f}% test accuracy).",
        file=out,
    )
    return 0
