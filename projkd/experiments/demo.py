"""The demo: distil a digits teacher five ways and compare the students."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import torch
from sklearn.model_selection import train_test_split
from skorch.callbacks import LRScheduler
from tqdm.auto import tqdm

from ..analysis import (
    compare,
    cost_summary,
    format_markdown,
    plot_cka_heatmap,
    plot_reliability_diagrams,
)
from ..augment import RandomCropFlip
from ..data import load_digits
from ..distiller import ProjectorDistiller
from ..models import digits_student, digits_teacher
from ..teacher.training import train_teacher
from ..utils import seeded
from .io import output_folder
from .progress import PhaseLog

__all__ = ["VARIANTS", "main", "run_demo", "summarize", "teacher_training"]

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
#: The teacher trains this many times the students' epochs, on images shifted
#: by up to a pixel (no flips: a mirrored digit is another glyph), with a
#: cosine learning rate: a teacher clearly better than any student alone.
TEACHER_EPOCHS_FACTOR = 2


def teacher_training(epochs: int) -> dict[str, Any]:
    """The demo teacher's :func:`~projkd.teacher.train_teacher` parameters
    for students trained ``epochs`` epochs (the students' recipe is
    ``_TRAINING``, untouched)."""
    teacher_epochs = TEACHER_EPOCHS_FACTOR * epochs
    return dict(
        optimizer=torch.optim.Adam,
        lr=3e-3,
        batch_size=64,
        max_epochs=teacher_epochs,
        train_transform=RandomCropFlip(padding=1, flip_probability=0.0),
        callbacks=[
            LRScheduler(
                policy=torch.optim.lr_scheduler.CosineAnnealingLR,
                T_max=teacher_epochs,
            )
        ],
    )


def run_demo(
    *,
    epochs: int = 30,
    random_state: int = 0,
    progress: bool = True,
    out: str | Path | None = None,
    cost: bool = True,
) -> list[dict[str, Any]]:
    """Train a teacher on digits, then distil a smaller student five ways.

    Parameters
    ----------
    epochs : int, default=30
        Training epochs of each student. The teacher trains twice as long,
        on images shifted by up to a pixel, with a cosine learning rate
        (:func:`teacher_training`).
    random_state : int, default=0
        Seeds the split, the networks' initialisation and their training:
        the same seed gives the same table in any process (on CPU).
    progress : bool, default=True
        Show a progress bar on standard error while the networks train, then
        a line for each phase after it (plots, each model's accuracy and
        calibration, CKA, cost).
    out : str, Path or None, default=None
        Folder for ``reliability.png`` (teacher, no projector, 3 projectors)
        and ``cka_no_projector.png`` / ``cka_3_projectors.png`` (layer-wise
        CKA with the teacher); None writes no plots.
    cost : bool, default=True
        Add each network's parameters, multiply-accumulates per image and
        measured latency/throughput at batch 1 on the CPU. The timings are
        measured, so they differ from run to run; everything else is fixed
        by ``random_state``.

    Returns
    -------
    rows : list of dict
        One per model (the teacher first): train and test accuracy, their
        gap, ECE, over-confidence and CKA with the teacher (see
        :func:`projkd.analysis.compare`).
    """
    X, y = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.5, stratify=y, random_state=random_state
    )
    log = PhaseLog("projkd demo", enabled=progress)  # its seconds: the demo's
    bar = tqdm(total=1 + len(VARIANTS), disable=not progress, desc="projkd demo")
    bar.set_postfix_str("teacher")
    # networks are built under the seed: torch's global generator differs
    # from process to process; every student starts from the same weights
    with seeded(random_state, "cpu"):
        teacher_init = digits_teacher()
    with seeded(random_state + 1, "cpu"):
        student_init = digits_student()
    teacher = train_teacher(
        teacher_init,
        X_train,
        y_train,
        random_state=random_state,
        **teacher_training(epochs),
    )
    bar.update()
    students = {}
    for name, params in VARIANTS.items():
        bar.set_postfix_str(name)
        students[name] = ProjectorDistiller(
            teacher,
            student_init,
            max_epochs=epochs,
            random_state=random_state,
            **params,
            **_TRAINING,
        ).fit(X_train, y_train)
        bar.update()
    bar.close()
    if out is not None:
        try:
            _plots(output_folder(out), students, X_test, y_test, log)
        except ImportError as error:  # matplotlib is an optional extra
            print(f"No plots: {error}", file=sys.stderr)
    return compare(students, X_train, y_train, X_test, y_test, cost=cost, progress=log)


def _plots(
    out: Path,
    students: dict[str, Any],
    X_test: Any,
    y_test: Any,
    log: Callable[[str], None],
) -> None:
    plain, ensemble = (
        students["feature, no projector"],
        students["feature, 3 projectors"],
    )
    log("reliability diagrams: teacher, no projector, 3 projectors (test set)")
    plot_reliability_diagrams(
        {
            "teacher": (y_test, ensemble.predict_proba_teacher(X_test)),
            "no projector": (y_test, plain.predict_proba(X_test)),
            "3 projectors": (y_test, ensemble.predict_proba(X_test)),
        },
        out / "reliability.png",
        labels=ensemble.classes_,
    )
    for name, student in (("no_projector", plain), ("3_projectors", ensemble)):
        log(f"CKA with the teacher, layer by layer: {name.replace('_', ' ')}")
        plot_cka_heatmap(
            student.module_, student.teacher_, X_test, out / f"cka_{name}.png"
        )


def main(
    epochs: int = 30,
    random_state: int = 0,
    out: str | Path | None = None,
    stream: TextIO | None = None,
    cost: bool = True,
) -> int:
    """Run the demo and print its table (to ``stream``, standard output by default)."""
    stream = sys.stdout if stream is None else stream
    rows = run_demo(epochs=epochs, random_state=random_state, out=out, cost=cost)
    print(format_markdown(rows), file=stream)
    print("\n" + summarize(rows), file=stream)
    if cost:
        print("\n" + cost_summary(rows), file=stream)
    if out is not None and (Path(out) / "reliability.png").exists():
        print(
            f"Plots: {Path(out) / 'reliability.png'}, {Path(out) / 'cka_*.png'}",
            file=stream,
        )
    return 0


def _signed(value: float, digits: int = 2) -> str:
    return f"{value:+.{digits}f}"


def summarize(rows: list[dict[str, Any]]) -> str:
    """What the demo's table shows, in words computed from its numbers.

    Parameters
    ----------
    rows : list of dict
        The rows of :func:`run_demo` (teacher first).

    Returns
    -------
    text : str
        The best student, and how feature distillation with 1 and 3
        projectors differs from none (test accuracy, gap, ECE, CKA).
    """
    by_name = {row["model"]: row for row in rows}
    best = max(rows[1:], key=lambda row: row["test_acc"])
    lines = [
        f"Best student: {best['model']} "
        f"({100 * best['test_acc']:.2f}% test accuracy; teacher "
        f"{100 * rows[0]['test_acc']:.2f}%)."
    ]
    plain = by_name.get("feature, no projector")
    for name in ("feature, 1 projector", "feature, 3 projectors"):
        row = by_name.get(name)
        if plain is None or row is None:
            continue
        lines.append(
            f"{name[len('feature, ') :].capitalize()} vs no projector: test "
            f"accuracy {_signed(100 * (row['test_acc'] - plain['test_acc']))} "
            f"points, gap {_signed(100 * (row['gap'] - plain['gap']))}, "
            f"ECE {_signed(100 * (row['ece'] - plain['ece']))}, "
            f"CKA {_signed(row['cka'] - plain['cka'], 3)}."
        )
    lines.append(
        "One seed on a small data set: read differences of a point or two as "
        "noise (benchmarks/ compares variants over seeds)."
    )
    return "\n".join(lines)
