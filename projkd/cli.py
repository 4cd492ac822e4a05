"""The ``projkd`` command line: a thin layer over :mod:`projkd.experiments`."""

from __future__ import annotations

import argparse
import ast
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _common(parser: argparse.ArgumentParser, *, teacher: bool, student: bool) -> None:
    from .experiments import DATASETS

    parser.add_argument("--dataset", choices=DATASETS, default="digits")
    parser.add_argument("--data-root", help="folder of the data set's files")
    parser.add_argument("--subset", type=int, help="use this many training images")
    parser.add_argument(
        "--epochs",
        type=int,
        default=20,
        help="epochs (CIFAR-100's lr milestones are scaled to it)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="projkd-runs", help="output folder")
    if teacher:
        parser.add_argument("--teacher-arch", help="a projkd.models name")
        parser.add_argument(
            "--teacher-weights",
            required=student,
            help="teacher.pt written by train-teacher",
        )
    if student:
        parser.add_argument("--student-arch", help="a projkd.models name")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="projkd", description="Projector-ensemble knowledge distillation."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="distil a digits teacher five ways")
    demo.add_argument("--epochs", type=int, default=30, help="epochs per model (30)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (0)")
    demo.add_argument("--out", default="projkd-demo", help="folder for the plots")

    teacher = commands.add_parser("train-teacher", help="train and save a teacher")
    _common(teacher, teacher=True, student=False)

    distill = commands.add_parser("distill", help="distil a saved teacher")
    _common(distill, teacher=True, student=True)
    distill.add_argument("--n-projectors", type=int, default=3)
    distill.add_argument("--projector", default="linear", choices=["linear", "mlp"])
    distill.add_argument("--feature-weight", type=float, default=25.0)
    distill.add_argument("--kd-weight", type=float, default=0.0)
    distill.add_argument("--ce-weight", type=float, default=1.0)
    distill.add_argument("--logit-projector", action="store_true")

    search = commands.add_parser("search", help="cross-validated search")
    _common(search, teacher=True, student=True)
    search.add_argument(
        "--n-projectors",
        default="1,2,3,4",
        help="comma-separated values to search (1,2,3,4)",
    )
    search.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="another estimator parameter to search; repeatable",
    )
    search.add_argument("--cv", type=int, default=3)
    search.add_argument("--n-jobs", type=int, default=None)

    report = commands.add_parser("report", help="table and plots of saved students")
    report.add_argument("runs", nargs="+", help="folders written by distill")
    report.add_argument("--out", default="projkd-report")
    report.add_argument("--device", default="cpu")
    return parser


def _values(text: str) -> list[Any]:
    values = []
    for item in text.split(","):
        try:
            values.append(ast.literal_eval(item))
        except (ValueError, SyntaxError):
            values.append(item)  # a bare string
    return values


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``projkd`` and ``python -m projkd``."""
    parser = _parser()
    from .reproduce import add_subcommand  # `projkd reproduce` (issue 13)

    add_subcommand(parser)
    args = parser.parse_args(argv)
    if args.command == "reproduce":
        return int(args.handler(args))
    if args.command == "demo":
        from .demo import main as demo_main

        return demo_main(epochs=args.epochs, random_state=args.seed, out=args.out)

    if args.command == "report":
        from .report import report

        report(args.runs, out=args.out, device=args.device)
        print((Path(args.out) / "results.md").read_text())
        return 0

    from . import experiments

    common = dict(
        dataset=args.dataset,
        data_root=args.data_root,
        epochs=args.epochs,
        device=args.device,
        subset=args.subset,
        seed=args.seed,
        out=args.out,
    )
    if args.command == "train-teacher":
        record = experiments.train_teacher_run(arch=args.teacher_arch, **common)
        print(
            f"teacher: train {100 * record['train_acc']:.2f}%, test "
            f"{100 * record['test_acc']:.2f}% -> {Path(args.out) / 'teacher.pt'}"
        )
        return 0
    models = dict(
        teacher_arch=args.teacher_arch,
        teacher_weights=args.teacher_weights,
        student_arch=args.student_arch,
    )
    if args.command == "distill":
        experiments.distill(
            **common,
            **models,
            n_projectors=args.n_projectors,
            projector=args.projector,
            feature_weight=args.feature_weight,
            kd_weight=args.kd_weight,
            ce_weight=args.ce_weight,
            logit_projector=args.logit_projector,
        )
    else:  # search
        grid = {"n_projectors": _values(args.n_projectors)}
        for spec in args.param:
            name, _, values = spec.partition("=")
            if not values:
                raise SystemExit(f"--param {spec!r}: expected NAME=V1,V2")
            grid[name] = _values(values)
        experiments.search(
            **common, **models, grid=grid, cv=args.cv, n_jobs=args.n_jobs
        )
    print((Path(args.out) / "results.md").read_text())
    return 0
