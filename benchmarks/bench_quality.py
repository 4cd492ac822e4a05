"""Distillation quality at CPU scale: the paper's comparisons on real data.

Run (both data sets, about 30 minutes on 2 CPU cores):
    python benchmarks/bench_quality.py
or one of them: --dataset mnist, --dataset cifar100.

For each variant (student alone, KD, feature distillation without projector,
with 1 projector, with ensembles of 2, 3 and 4, and KD with a logit
projector) and each seed, a student is distilled from one teacher; the table
gives mean ± std over seeds of final-epoch test accuracy (the main figure),
best-epoch test accuracy (selected on the test set, as the literature
reports, only to compare with published tables), train accuracy, the
train-test gap, ECE and linear CKA with the teacher on the test set.
Results are written to benchmarks/results/quality_<dataset>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from skorch.callbacks import Callback

from projkd import ProjectorDistiller
from projkd.analysis import compare
from projkd.experiments import load_data
from projkd.models import get_model
from projkd.teacher import train_teacher

VARIANTS = {
    "student alone": dict(
        ce_weight=1.0, kd_weight=0.0, feature_weight=0.0, n_projectors=0
    ),
    "KD": dict(ce_weight=0.1, kd_weight=0.9, feature_weight=0.0, n_projectors=0),
    "feature, no projector": dict(n_projectors=0),
    "feature, 1 projector": dict(n_projectors=1),
    "feature, 2 projectors": dict(n_projectors=2),
    "feature, 3 projectors": dict(n_projectors=3),
    "feature, 4 projectors": dict(n_projectors=4),
    "KD + logit projector": dict(
        ce_weight=0.1,
        kd_weight=0.9,
        feature_weight=0.0,
        n_projectors=0,
        logit_projector=True,
    ),
}

SETUPS = {
    # dataset: teacher, student, training images, teacher and student epochs,
    # training parameters
    "mnist": (
        "digits_teacher",
        "digits_student",
        6000,
        4,
        4,
        dict(optimizer=torch.optim.Adam, lr=3e-3, batch_size=64),
    ),
    "cifar100": (
        "resnet20",
        "resnet8",
        3000,
        10,
        6,
        dict(
            optimizer=torch.optim.SGD,
            lr=0.05,
            optimizer__momentum=0.9,
            optimizer__weight_decay=5e-4,
            batch_size=64,
        ),
    ),
}
ROOTS = {"mnist": "mnist", "cifar100": "cifar100"}
TEST_SIZES = {"mnist": 10_000, "cifar100": 2000}
METRICS = ("test_acc", "best_test_acc", "train_acc", "gap", "ece", "cka")


class TestAccuracy(Callback):
    """Records accuracy on held-out data after each epoch (for best-epoch)."""

    def __init__(self, X, y):
        self.X = X
        self.y = y

    def on_epoch_end(self, net, **kwargs):
        net.history.record("test_acc", net.score(self.X, self.y))


def build(arch, data):
    kwargs = {"in_channels": data.in_channels} if arch.startswith("digits_") else {}
    return get_model(arch, num_classes=data.n_classes, **kwargs)


def main(args):
    if args.dataset == "all":
        for dataset in sorted(SETUPS, reverse=True):  # mnist, then cifar100
            main(
                argparse.Namespace(
                    **{**vars(args), "dataset": dataset, "test_size": None}
                )
            )
        return
    teacher_arch, student_arch, subset, t_epochs, s_epochs, training = SETUPS[
        args.dataset
    ]
    subset = args.subset or subset
    root = Path(args.data_root) / ROOTS[args.dataset]
    data = load_data(args.dataset, str(root), subset=subset, seed=0)
    args.test_size = args.test_size or TEST_SIZES[args.dataset]
    X_test, y_test = data.X_test[: args.test_size], data.y_test[: args.test_size]
    start = time.perf_counter()
    torch.manual_seed(0)
    teacher = train_teacher(
        build(teacher_arch, data),
        data.X_train,
        data.y_train,
        max_epochs=t_epochs,
        random_state=0,
        iterator_train__shuffle=True,
        **training,
    )
    print(f"teacher {teacher_arch} trained in {time.perf_counter() - start:.0f} s")
    per_variant = {name: [] for name in VARIANTS}
    for seed in range(args.seeds):
        for name, params in VARIANTS.items():
            est = ProjectorDistiller(
                teacher,
                build(student_arch, data),
                max_epochs=s_epochs,
                random_state=seed,
                train_split=None,
                verbose=0,
                classes=np.arange(data.n_classes),
                callbacks=[("test_acc", TestAccuracy(X_test, y_test))],
                **params,
                **training,
            ).fit(data.X_train, data.y_train)
            row = compare(
                {name: est}, data.X_train, data.y_train, X_test, y_test, teacher=False
            )[0]
            row["best_test_acc"] = max(est.history[:, "test_acc"])
            per_variant[name].append(row)
            print(
                f"seed {seed} {name}: test {100 * row['test_acc']:.2f}% "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    teacher_row = compare({"any": est}, data.X_train, data.y_train, X_test, y_test)[0]
    write(args, subset, teacher_row, per_variant)


def write(args, subset, teacher_row, per_variant):
    teacher_arch, student_arch, _, t_epochs, s_epochs, _ = SETUPS[args.dataset]
    lines = [
        f"{args.dataset}: teacher {teacher_arch} ({t_epochs} epochs; test accuracy "
        f"{100 * teacher_row['test_acc']:.2f}%, "
        f"ECE {100 * teacher_row['ece']:.2f}%) -> student {student_arch}, "
        f"{subset} training images, {s_epochs} epochs, {args.seeds} seeds, "
        f"{args.test_size} test images. Mean ± std over seeds; accuracies, gap and "
        "ECE in %.",
        "",
        "| variant | test acc (final) | test acc (best epoch) | train acc | gap | ECE "
        "| CKA |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    summary = {}
    for name, rows in per_variant.items():
        cells, summary[name] = [], {}
        for metric in METRICS:
            values = np.array([row[metric] for row in rows])
            scale = 1 if metric == "cka" else 100
            mean, std = scale * values.mean(), scale * values.std()
            summary[name][metric] = {
                "mean": mean,
                "std": std,
                "values": values.tolist(),
            }
            digits = 3 if metric == "cka" else 2
            cells.append(f"{mean:.{digits}f} ± {std:.{digits}f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print("\n" + table)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"quality_{args.dataset}.md").write_text(table + "\n")
    (out / f"quality_{args.dataset}.json").write_text(
        json.dumps({"teacher": teacher_row, "variants": summary}, indent=2) + "\n"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=[*sorted(SETUPS), "all"], default="all")
    parser.add_argument(
        "--data-root",
        default=str(Path(__file__).resolve().parents[2] / "shared" / "data"),
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--subset", type=int, help="training images (default per set)")
    parser.add_argument("--test-size", type=int, help="test images (default per set)")
    main(parser.parse_args())
