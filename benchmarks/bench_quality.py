"""Distillation quality on MNIST at CPU scale: the paper's claims, tested over seeds.

Run (90 student fits: 25 minutes of CPU time on one torch thread,
``OMP_NUM_THREADS=1``, 29 minutes of wall time on the shared 2-core machine;
the 5 hint fits take a fifth of it. The teacher is loaded from
``benchmarks/results/quality_mnist_teacher.pt`` when present, else trained:
12 minutes of wall time more on the shared machine):

    python benchmarks/bench_quality.py

A CNN teacher (``mnist_teacher``, trained once on the 60,000 training images)
is distilled into a small student (``mnist_student``, whose 128 features equal
the teacher's, so feature distillation without a projector is the paper's
"same dimensions" comparison). The students see a fixed subset of the
training images (default 1,500) so that there is a real train-test gap, and
train to convergence (Adam, 15 epochs of batch 32, cosine learning rate to
zero; ``--optimizer sgd`` for SGD with momentum); every network and
projector is built inside the seeded fit (``random_state=seed``, the student
passed as a class with ``student__*``). For each variant and seed the final
test accuracy, train accuracy, gap, ECE, over-confidence and linear CKA with
the teacher are recorded; each of the paper's claims is judged on the paired
difference over seeds with a 95% t-interval.

Issue 30's methods are each compared with their own baseline, paired (same
seeds, data and optimizer; only what the row names differs):

- *KD + LS*: logit standardization with its authors' CIFAR-100 recipe (base
  T = 2, KD weight 9, CE 0.1, which is also the study's KD CE weight),
  against the study's KD (T = 4, weight 0.9), as the authors' table compares
  them. The control *KD at T 2, weight 9 (LS's recipe, no LS)* differs from
  KD + LS in the standardization alone, so a second claim tells LS from its
  temperature and weight.
- *feature SRD, 1 or 3 projectors*: the normalised projector's term
  (``feature_loss="srd"``) at its authors' weight 2.0 in place of the cosine
  at 25, with the study's feature recipe otherwise (CE 1, no KD) and the
  same projectors (Linear + ReLU, 1 or 3), against the cosine rows. The
  authors also add KD at T = 1, left out here so that the feature term is
  the only difference.
- *feature, 3 projectors + hints at 2 stages*: PEFD's cosine at each
  position of the first two stages (``features.2 -> features.5`` at 28x28,
  ``features.6 -> features.12`` at 14x14: each stage's last ReLU, before
  its pooling), each pair with 3 projectors of its own, ``hint_weight=25``
  (the feature term's weight: the same distance at another layer), on top
  of the paper's feature recipe (3 projectors), against that recipe. The
  teacher cache is off with hints, so these fits run the teacher on every
  batch (about 6 times slower).

Results go to
``benchmarks/results/quality_mnist.{md,json}`` (after each seed from the second
on, so an interrupted run keeps what it finished); ``--from-json FILE``
rebuilds the claims and the table from a results file without training.
``--tiny`` runs a few-second version (for the test suite) that writes nothing
unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skorch.callbacks import Callback, LRScheduler

from projkd import ProjectorDistiller
from projkd.experiments import Data, load_data
from projkd.losses import DISTLoss, DKDLoss, KDLoss
from projkd.metrics import expected_calibration_error, linear_cka, overconfidence
from projkd.models import MnistCNN, mnist_teacher
from projkd.teacher import load_teacher, save_teacher, train_teacher
from projkd.utils import seeded

RESULTS = Path(__file__).resolve().parent / "results"
TEACHER_FILE = "quality_mnist_teacher.pt"
DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"

KD = dict(ce_weight=0.1, kd_weight=0.9, feature_weight=0.0, n_projectors=0)
# the authors' CIFAR-100 recipes (T = 4, the estimator's default): DKD CE 1,
# alpha 1, beta 8, warm-up over 20/240 of the run; DIST CE 1, weight 2,
# beta = gamma = 1
DKD = dict(
    ce_weight=1.0,
    kd_weight=1.0,
    feature_weight=0.0,
    n_projectors=0,
    logit_loss=DKDLoss(alpha=1.0, beta=8.0),
)
DIST = dict(
    ce_weight=1.0,
    kd_weight=2.0,
    feature_weight=0.0,
    n_projectors=0,
    logit_loss=DISTLoss(beta=1.0, gamma=1.0),
)
#: (student module, teacher module) of the stages the hint rows compare
HINT_LAYERS = [("features.2", "features.5"), ("features.6", "features.12")]
VARIANTS: dict[str, dict[str, Any]] = {
    "student alone": dict(
        ce_weight=1.0, kd_weight=0.0, feature_weight=0.0, n_projectors=0
    ),
    "KD": KD,
    "feature, no projector": dict(n_projectors=0),
    "feature, 1 projector": dict(n_projectors=1),
    "feature, 2 projectors": dict(n_projectors=2),
    "feature, 3 projectors": dict(n_projectors=3),
    "feature, 4 projectors": dict(n_projectors=4),
    "KD + logit projector (identity init)": dict(
        KD, logit_projector=True, logit_projector_init="identity"
    ),
    "KD + logit projector (reference init)": dict(
        KD, logit_projector=True, logit_projector_init="default"
    ),
    "DKD": DKD,
    "DKD + logit projector (identity init)": dict(
        DKD, logit_projector=True, logit_projector_init="identity"
    ),
    "DIST": DIST,
    "DIST + logit projector (identity init)": dict(
        DIST, logit_projector=True, logit_projector_init="identity"
    ),
}
# issue 30's methods, each beside the row it is compared with (same seeds,
# same optimizer and data; only what is named differs). KD + LS: the authors'
# CIFAR-100 recipe (base T = 2, KD weight 9, CE 0.1, which is also the study's
# KD CE weight), against the study's KD (T = 4, weight 0.9) as in the authors'
# table; the control "KD at T 2, weight 9" is KD + LS without the
# standardization, to tell LS from its weights.
KD_LS = dict(KD, kd_weight=9.0, temperature=2.0, logit_loss=KDLoss(standardize=True))
VARIANTS.update(
    {
        "KD + LS": KD_LS,
        "KD at T 2, weight 9 (LS's recipe, no LS)": dict(
            KD_LS, logit_loss=KDLoss(standardize=False)
        ),
        # the SRD term at its authors' weight 2.0 (CE 1, no KD: the feature
        # term alone differs from the cosine rows); the same projectors as
        # the cosine rows (Linear + ReLU)
        "feature SRD, 1 projector": dict(
            n_projectors=1, feature_loss="srd", feature_weight=2.0
        ),
        "feature SRD, 3 projectors": dict(
            n_projectors=3, feature_loss="srd", feature_weight=2.0
        ),
        # PEFD's cosine at each position of the first two stages' outputs
        # (after their ReLU, before the pooling: 28x28 and 14x14 in both
        # networks), weighted as the feature term, on top of the paper's
        # feature recipe (3 projectors)
        "feature, 3 projectors + hints at 2 stages": dict(
            n_projectors=3, hint_layers=HINT_LAYERS, hint_weight=25.0
        ),
    }
)
# feature variants use the recipe's weights: CE 1, feature 25, KD 0
FEATURE = dict(ce_weight=1.0, kd_weight=0.0, feature_weight=25.0)
METRICS = ("test_acc", "train_acc", "gap", "ece", "overconfidence", "cka")
PERCENT = {"test_acc", "train_acc", "gap", "ece", "overconfidence"}

# (claim, variant A, variant B, metric, sign): the claim is "sign * (A - B) > 0"
CLAIMS: list[tuple[str, str, str, str, int]] = [
    (
        "(set-up check, not a claim of the paper) KD raises test accuracy",
        "KD",
        "student alone",
        "test_acc",
        +1,
    ),
    (
        "a projector raises test accuracy (1 projector vs none, equal widths)",
        "feature, 1 projector",
        "feature, no projector",
        "test_acc",
        +1,
    ),
    (
        "a projector narrows the train-test gap",
        "feature, 1 projector",
        "feature, no projector",
        "gap",
        -1,
    ),
    (
        "a projector keeps more of the teacher's representation (higher CKA)",
        "feature, 1 projector",
        "feature, no projector",
        "cka",
        +1,
    ),
    (
        "a projector lowers the ECE",
        "feature, 1 projector",
        "feature, no projector",
        "ece",
        -1,
    ),
    (
        "an ensemble of 3 projectors raises test accuracy over 1",
        "feature, 3 projectors",
        "feature, 1 projector",
        "test_acc",
        +1,
    ),
    (
        "a logit projector (identity init) raises KD's test accuracy",
        "KD + logit projector (identity init)",
        "KD",
        "test_acc",
        +1,
    ),
    (
        "a logit projector (reference init) raises KD's test accuracy",
        "KD + logit projector (reference init)",
        "KD",
        "test_acc",
        +1,
    ),
    (
        "a logit projector (identity init) raises DKD's test accuracy",
        "DKD + logit projector (identity init)",
        "DKD",
        "test_acc",
        +1,
    ),
    (
        "a logit projector (identity init) raises DIST's test accuracy",
        "DIST + logit projector (identity init)",
        "DIST",
        "test_acc",
        +1,
    ),
    ("LS helps KD (the authors' recipe vs KD)", "KD + LS", "KD", "test_acc", +1),
    (
        "LS itself helps KD (at LS's T and weights)",
        "KD + LS",
        "KD at T 2, weight 9 (LS's recipe, no LS)",
        "test_acc",
        +1,
    ),
    (
        "SRD beats cosine (1 projector)",
        "feature SRD, 1 projector",
        "feature, 1 projector",
        "test_acc",
        +1,
    ),
    (
        "SRD beats cosine (3 projectors)",
        "feature SRD, 3 projectors",
        "feature, 3 projectors",
        "test_acc",
        +1,
    ),
    (
        "an ensemble helps SRD (3 projectors vs 1)",
        "feature SRD, 3 projectors",
        "feature SRD, 1 projector",
        "test_acc",
        +1,
    ),
    (
        "hints at two stages help (3 projectors)",
        "feature, 3 projectors + hints at 2 stages",
        "feature, 3 projectors",
        "test_acc",
        +1,
    ),
]


class LateTestAccuracy(Callback):
    """Record the test accuracy after each of the last ``n_last`` epochs."""

    def __init__(self, X: np.ndarray, y: np.ndarray, n_last: int = 3) -> None:
        self.X = X
        self.y = y
        self.n_last = n_last

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        if len(net.history) > net.max_epochs - self.n_last:
            net.history.record("test_acc", net.score(self.X, self.y))


def cosine(epochs: int) -> tuple[str, LRScheduler]:
    """A per-epoch cosine schedule from the initial lr to zero."""
    return (
        "lr_scheduler",
        LRScheduler(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=epochs),
    )


def sgd(lr: float, epochs: int, batch_size: int) -> dict[str, Any]:
    """SGD with momentum 0.9, weight decay 5e-4 and a cosine schedule."""
    return dict(
        optimizer=torch.optim.SGD,
        lr=lr,
        optimizer__momentum=0.9,
        optimizer__weight_decay=5e-4,
        batch_size=batch_size,
        max_epochs=epochs,
        callbacks=[cosine(epochs)],
    )


def adam(lr: float, epochs: int, batch_size: int) -> dict[str, Any]:
    """Adam (no weight decay) with a cosine schedule."""
    return dict(
        optimizer=torch.optim.Adam,
        lr=lr,
        batch_size=batch_size,
        max_epochs=epochs,
        callbacks=[cosine(epochs)],
    )


OPTIMIZERS = {
    "sgd": (sgd, "SGD momentum 0.9, weight decay 5e-4, cosine lr to 0"),
    "adam": (adam, "Adam, cosine lr to 0"),
}


# ---------------------------------------------------------------- teacher
TEACHER_RECIPE = dict(lr=0.05, epochs=8, batch_size=128, seed=0)


def get_teacher(
    data: Data, path: Path | None, epochs: int | None = None, verbose: int = 0
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load the teacher from ``path`` if it exists, else train it (and save it)."""
    if path is not None and path.is_file():
        teacher = load_teacher(mnist_teacher(), path)
        return teacher, {"source": f"loaded from {path.name}", "sha256": sha256(path)}
    recipe = dict(TEACHER_RECIPE, epochs=epochs or TEACHER_RECIPE["epochs"])
    start = time.perf_counter()
    with seeded(recipe["seed"], "cpu"):
        model = mnist_teacher()
    teacher = train_teacher(
        model,
        data.X_train,
        data.y_train,
        random_state=recipe["seed"],
        iterator_train__shuffle=True,
        verbose=verbose,
        **sgd(recipe["lr"], recipe["epochs"], recipe["batch_size"]),
    )
    info: dict[str, Any] = {
        "source": "trained by this run",
        "seconds": round(time.perf_counter() - start),
    }
    if path is not None:
        teacher = teacher.float()
        save_teacher(teacher, path)
        info["sha256"] = sha256(path)
    return teacher, info


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def machine() -> str:
    return (
        f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


# ---------------------------------------------------------------- students
def evaluate(
    est: ProjectorDistiller,
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    teacher_test_features: np.ndarray,
) -> dict[str, float]:
    """The row of :func:`projkd.analysis.compare`, with the teacher's features given.

    The teacher's test features are computed once per run rather than once
    per fitted student; the formulas are those of ``compare``.
    """
    classes = np.asarray(est.classes_)
    train_acc = float(np.mean(est.predict(X_train) == y_train))
    proba = est.predict_proba(X_test)
    test_acc = float(np.mean(classes[proba.argmax(axis=1)] == y_test))
    return {
        "test_acc": test_acc,
        "train_acc": train_acc,
        "gap": train_acc - test_acc,
        "ece": float(expected_calibration_error(y_test, proba, labels=classes)),
        "overconfidence": float(overconfidence(y_test, proba, labels=classes)),
        "cka": float(linear_cka(est.transform(X_test), teacher_test_features)),
    }


def variant_params(variant: dict[str, Any]) -> dict[str, Any]:
    """A variant's estimator parameters: a feature variant (one that sets no
    ``kd_weight``) on top of the feature recipe :data:`FEATURE`."""
    return {**FEATURE, **variant} if "kd_weight" not in variant else dict(variant)


def fit_student(
    teacher: torch.nn.Module,
    variant: dict[str, Any],
    seed: int,
    data: Data,
    X_test: np.ndarray,
    y_test: np.ndarray,
    args: argparse.Namespace,
) -> ProjectorDistiller:
    """Distil one student; the student and projectors are built inside the fit."""
    training = OPTIMIZERS[args.optimizer][0](args.lr, args.epochs, args.batch_size)
    callbacks = [
        *training.pop("callbacks"),
        ("test_acc", LateTestAccuracy(X_test, y_test)),
    ]
    params = variant_params(variant)
    return ProjectorDistiller(
        teacher,
        MnistCNN,
        student__widths=(8, 16),
        student__n_features=128,
        student__num_classes=data.n_classes,
        random_state=seed,
        train_split=None,
        verbose=0,
        classes=np.arange(data.n_classes),
        callbacks=callbacks,
        **params,
        **training,
    ).fit(data.X_train, data.y_train)


def paired(
    a: Sequence[float], b: Sequence[float], sign: int, confidence: float = 0.95
) -> dict[str, Any]:
    """The paired difference ``sign * (a - b)`` over seeds, its t-interval, a verdict.

    The verdict is "holds" when the whole interval is above zero, "does not
    hold" when it is below zero (the opposite effect is seen), and "cannot
    tell at this scale" when it contains zero.

    Examples
    --------
    >>> paired([0.9, 0.92, 0.91], [0.8, 0.83, 0.81], +1)["verdict"]
    'holds'
    """
    from scipy import stats

    diff = sign * (np.asarray(a, dtype=float) - np.asarray(b, dtype=float))
    n = len(diff)
    if n < 2:
        raise ValueError(f"A paired interval needs at least 2 seeds, got {n}.")
    mean = float(diff.mean())
    half = float(
        stats.t.ppf(0.5 + confidence / 2, n - 1) * diff.std(ddof=1) / np.sqrt(n)
    )
    low, high = mean - half, mean + half
    if low > 0:
        verdict = "holds"
    elif high < 0:
        verdict = "does not hold"
    else:
        verdict = "cannot tell at this scale"
    return {
        "mean": mean,
        "low": low,
        "high": high,
        "n": n,
        "differences": diff.tolist(),
        "verdict": verdict,
    }


# the students drawn in the figures (seed 0), as the paper compares them
FIGURE_VARIANTS = ("student alone", "feature, no projector", "feature, 3 projectors")


def figures(
    students: dict[str, ProjectorDistiller],
    X_test: np.ndarray,
    y_test: np.ndarray,
    out: Path,
) -> list[Path]:
    """The paper's pictures for the first seed, next to the table.

    ``quality_mnist_reliability.png`` (teacher and students),
    ``quality_mnist_cka_<variant>.png`` (layer-by-layer minibatch CKA with the
    teacher) and ``quality_mnist_accuracy.png`` (train and test accuracy per
    epoch). Needs matplotlib; without it, none is written.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return []
    from projkd.analysis import (
        plot_accuracy_curves,
        plot_cka_heatmap,
        plot_reliability_diagrams,
    )

    any_est = next(iter(students.values()))
    predictions = {"teacher": (y_test, any_est.predict_proba_teacher(X_test))}
    predictions.update(
        {name: (y_test, est.predict_proba(X_test)) for name, est in students.items()}
    )
    written = [
        plot_reliability_diagrams(
            predictions, out / "quality_mnist_reliability.png", labels=any_est.classes_
        ),
        plot_accuracy_curves(
            {name: est.history for name, est in students.items()},
            out / "quality_mnist_accuracy.png",
            dashed="test_acc",
        ),
    ]
    for name, est in students.items():
        if name == "student alone":
            continue
        slug = name.replace("feature, ", "").replace(" ", "_")
        written.append(
            plot_cka_heatmap(
                est.module_,
                est.teacher_,
                X_test[:2000],
                out / f"quality_mnist_cka_{slug}.png",
            )
        )
    return written


def load_or_train_teacher(
    full: Data, args: argparse.Namespace
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The stored teacher; without it, train one (a 1-epoch stand-in in tiny mode)."""
    path = RESULTS / TEACHER_FILE
    if args.tiny and not path.is_file():
        small = full._replace(
            X_train=full.X_train[: args.subset], y_train=full.y_train[: args.subset]
        )
        return get_teacher(small, None, epochs=1)
    return get_teacher(full, path, verbose=int(not args.tiny))


def run(
    args: argparse.Namespace,
    on_seed: Callable[[dict[str, Any]], None] | None = None,
    on_figures: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Train the teacher (or load it), then every variant for every seed.

    ``on_seed`` receives the results so far after each seed (to save them);
    ``on_figures`` receives the first seed's students of
    :data:`FIGURE_VARIANTS` and the test set (to draw them).
    """
    start = time.perf_counter()
    full = load_data("mnist", str(Path(args.data_root) / "mnist"))
    teacher, teacher_info = load_or_train_teacher(full, args)
    keep = np.sort(
        np.random.default_rng(0).choice(len(full.X_train), args.subset, replace=False)
    )
    data = full._replace(X_train=full.X_train[keep], y_train=full.y_train[keep])
    X_test, y_test = full.X_test[: args.test_size], full.y_test[: args.test_size]
    teacher_row, teacher_test_features = evaluate_teacher(teacher, data, X_test, y_test)
    print(f"teacher: {teacher_info}, test {100 * teacher_row['test_acc']:.2f}%")
    variants = {name: VARIANTS[name] for name in args.variants}
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    result: dict[str, Any] = {}
    drawn: dict[str, ProjectorDistiller] = {}
    for seed in range(args.seeds):
        for name, variant in variants.items():
            est = fit_student(teacher, variant, seed, data, X_test, y_test, args)
            row = evaluate(
                est, data.X_train, data.y_train, X_test, y_test, teacher_test_features
            )
            row["last_test_acc"] = [float(v) for v in est.history[:, "test_acc"]]
            row["seconds"] = float(sum(est.history[:, "dur"]))
            rows[name].append(row)
            if seed == 0 and name in FIGURE_VARIANTS:
                drawn[name] = est
            print(
                f"seed {seed} {name}: test {100 * row['test_acc']:.2f}% train "
                f"{100 * row['train_acc']:.2f}% ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
        setup = {
            "teacher": "mnist_teacher",
            "teacher_recipe": TEACHER_RECIPE,
            "teacher_source": teacher_info,
            "student": "mnist_student (MnistCNN widths (8, 16), 128 features)",
            "train_images": args.subset,
            "test_images": len(y_test),
            "epochs": args.epochs,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "optimizer": OPTIMIZERS[args.optimizer][1],
            "seeds": seed + 1,
            "command": command(args),
            "machine": machine(),
            "wall_seconds": round(time.perf_counter() - start),
            "cpu_seconds": round(time.process_time()),
        }
        if seed == 0 and on_figures is not None and drawn:
            on_figures(drawn, X_test, y_test)
            drawn = {}  # free the networks
        if seed > 0:  # a paired interval needs two seeds
            result = assemble(setup, teacher_row, rows)
            if on_seed is not None:
                on_seed(result)
    return result


def assemble(
    setup: dict[str, Any],
    teacher_row: dict[str, Any],
    rows: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """The results: per-variant summaries and the claims' paired intervals."""
    claims = [
        {"claim": claim, "a": a, "b": b, "metric": metric, "sign": sign}
        | paired([r[metric] for r in rows[a]], [r[metric] for r in rows[b]], sign)
        for claim, a, b, metric, sign in CLAIMS
        if a in rows and b in rows
    ]
    return {
        "setup": setup,
        "teacher": teacher_row,
        "variants": {name: summarise(r) for name, r in rows.items()},
        "per_seed": rows,
        "claims": claims,
    }


def accuracy(model: torch.nn.Module, X: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(logits(model, X).argmax(axis=1) == y))


@torch.no_grad()
def logits(model: torch.nn.Module, X: np.ndarray, batch: int = 2000) -> np.ndarray:
    return np.concatenate(
        [
            model(torch.from_numpy(X[i : i + batch])).numpy()
            for i in range(0, len(X), batch)
        ]
    )


@torch.no_grad()
def evaluate_teacher(
    teacher: torch.nn.Module, data: Data, X_test: np.ndarray, y_test: np.ndarray
) -> tuple[dict[str, float], np.ndarray]:
    """The teacher's row (on the students' training subset) and its test features."""
    teacher.eval()
    proba = torch.softmax(torch.from_numpy(logits(teacher, X_test)), 1).numpy()
    features = np.concatenate(
        [
            teacher.forward_features(torch.from_numpy(X_test[i : i + 2000])).numpy()
            for i in range(0, len(X_test), 2000)
        ]
    )
    train_acc = accuracy(teacher, data.X_train, data.y_train)
    test_acc = float(np.mean(proba.argmax(axis=1) == y_test))
    classes = np.arange(proba.shape[1])
    row = {
        "test_acc": test_acc,
        "train_acc": train_acc,
        "gap": train_acc - test_acc,
        "ece": float(expected_calibration_error(y_test, proba, labels=classes)),
        "overconfidence": float(overconfidence(y_test, proba, labels=classes)),
        "cka": 1.0,
    }
    return row, features


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over seeds of each metric, and the last epochs' spread."""
    out: dict[str, Any] = {}
    for metric in METRICS:
        values = np.array([row[metric] for row in rows])
        out[metric] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "values": values.tolist(),
        }
    spreads = [max(r["last_test_acc"]) - min(r["last_test_acc"]) for r in rows]
    out["last3_spread"] = {"mean": float(np.mean(spreads)), "max": float(max(spreads))}
    return out


def command(args: argparse.Namespace) -> str:
    parts = ["python benchmarks/bench_quality.py"]
    flags = ("seeds", "subset", "epochs", "test_size", "optimizer", "lr", "batch_size")
    for flag in flags:
        parts.append(f"--{flag.replace('_', '-')} {getattr(args, flag)}")
    if args.tiny:
        parts.append("--tiny")
    return " ".join(parts)


# ---------------------------------------------------------------- write-up
def pct(value: float) -> str:
    return f"{100 * value:.2f}"


def cell(summary: dict[str, Any], metric: str) -> str:
    mean, std = summary[metric]["mean"], summary[metric]["std"]
    if metric in PERCENT:
        return f"{100 * mean:.2f} ± {100 * std:.2f}"
    return f"{mean:.3f} ± {std:.3f}"


def interval(claim: dict[str, Any]) -> str:
    scale, unit = (100, " pt") if claim["metric"] in PERCENT else (1, "")
    digits = 2 if claim["metric"] in PERCENT else 3
    return (
        f"{scale * claim['mean']:+.{digits}f}{unit} "
        f"[{scale * claim['low']:+.{digits}f}, {scale * claim['high']:+.{digits}f}]"
    )


def markdown(result: dict[str, Any]) -> str:
    """The table, the claims and how the run was made, as Markdown."""
    setup, teacher = result["setup"], result["teacher"]
    short = (
        " **The teacher is short of the 99.2% asked for in issue #11** "
        "(see `quality_mnist_teacher.md`)."
        if teacher["test_acc"] < 0.992
        else ""
    )
    lines = [
        "# Distillation quality on MNIST",
        "",
        f"Teacher `{setup['teacher']}` ({setup['teacher_source']['source']}): "
        f"test accuracy {pct(teacher['test_acc'])}%, ECE {pct(teacher['ece'])}%, "
        f"over-confidence {pct(teacher['overconfidence'])} pt.{short} "
        f"Student `{setup['student']}`, {setup['train_images']} training images "
        f"(a fixed subset), {setup['epochs']} epochs of {setup['optimizer']} "
        f"(lr {setup['lr']}, batch {setup['batch_size']}), {setup['seeds']} seeds; "
        f"{setup['test_images']} test images. Mean ± std over seeds of the "
        "final epoch; accuracies, gap (train − test), ECE and over-confidence "
        "(mean confidence − accuracy) in %; CKA is linear CKA of penultimate "
        "features with the teacher's on the test set. *Last-3 spread*: the "
        "largest change of test accuracy over the last 3 epochs (mean over "
        "seeds): near 0 when the test accuracy has levelled off. The teacher's "
        "train accuracy is measured on the students' subset.",
        "",
        "| variant | test acc | train acc | gap | ECE | over-conf. | CKA "
        "| last-3 spread |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        "| teacher | "
        + " | ".join(
            pct(teacher[m]) if m in PERCENT else f"{teacher[m]:.3f}" for m in METRICS
        )
        + " | |",
    ]
    for name, summary in result["variants"].items():
        lines.append(
            f"| {name} | "
            + " | ".join(cell(summary, m) for m in METRICS)
            + f" | {100 * summary['last3_spread']['mean']:.2f} |"
        )
    lines += [
        "",
        "## The claims, paired over seeds",
        "",
        "The paper's claims, then those of the newer methods (logit "
        "standardization, the normalised projector SRD, hints), each against "
        "its own baseline. Each difference is taken seed by seed (same seed, "
        "same subset, same initial student weights up to the projectors), "
        "oriented so that a positive value supports the claim; the interval "
        "is the 95% t-interval of the mean difference. *holds*: the interval "
        "is above 0; "
        "*does not hold*: below 0 (the opposite is seen); *cannot tell at this "
        "scale*: it contains 0.",
        "",
        "| claim | A vs B | mean difference [95% CI] | verdict |",
        "|---|---|---:|---|",
    ]
    for claim in result["claims"]:
        lines.append(
            f"| {claim['claim']} | {claim['a']} vs {claim['b']} "
            f"| {interval(claim)} | **{claim['verdict']}** |"
        )
    lines += [
        "",
        f"Command: `{setup['command']}`  ",
        f"Machine: {setup['machine']}; the whole run took "
        f"{setup['wall_seconds'] / 60:.0f} min of wall time "
        f"({setup['cpu_seconds'] / 60:.0f} min of CPU time: the cores were shared).",
    ]
    return "\n".join(lines) + "\n"


def write(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality_mnist.md").write_text(markdown(result))
    (out / "quality_mnist.json").write_text(json.dumps(result, indent=2) + "\n")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(DATA_ROOT))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--subset", type=int, default=1500, help="training images")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--test-size", type=int, default=10_000)
    parser.add_argument("--optimizer", choices=list(OPTIMIZERS), default="adam")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS)
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="a few-second run (2 seeds, 2 epochs, 300 images) for the tests",
    )
    parser.add_argument(
        "--out", type=Path, help="results folder (default benchmarks/results)"
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        help="no training: rebuild the claims and the table from a results file",
    )
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error(
            f"--seeds must be at least 2 for paired intervals, got {args.seeds}"
        )
    if args.tiny:
        args.seeds, args.subset, args.epochs, args.test_size = 2, 300, 2, 500
        args.batch_size = 100
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = args.out or (None if args.tiny else RESULTS)
    if args.from_json is not None:
        saved = json.loads(args.from_json.read_text())
        result = assemble(saved["setup"], saved["teacher"], saved["per_seed"])
        write(result, out or RESULTS)
        print(markdown(result))
        return result
    result = run(
        args,
        None if out is None else lambda partial: write(partial, out),
        None if out is None else lambda *a: figures(*a, out=out),
    )
    print(markdown(result))
    return result


if __name__ == "__main__":
    if sys.argv[1:] == ["--teacher-only"]:
        # train (or load) and check the stored teacher, nothing else
        full = load_data("mnist", str(DATA_ROOT / "mnist"))
        teacher, info = get_teacher(full, RESULTS / TEACHER_FILE, verbose=1)
        print(info, "test accuracy", accuracy(teacher, full.X_test, full.y_test))
        print(machine())
    else:
        main()
