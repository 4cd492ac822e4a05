"""The ``projkd`` command line: a thin front over :mod:`projkd.experiments`.

Each command's arguments become one :class:`~projkd.experiments.RunSpec`
(plus the command's own parameters), handed to its function.
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "spec_from_args"]


# the distillation method's options, as `distill` takes them
_METHOD = (
    "n_projectors",
    "projector",
    "feature_weight",
    "kd_weight",
    "ce_weight",
    "logit_projector",
)


def _common(parser: argparse.ArgumentParser, *, student: bool) -> None:
    from . import DATASETS

    parser.add_argument("--dataset", choices=DATASETS, default="digits")
    parser.add_argument("--data-root", help="folder of the data set's files")
    parser.add_argument("--subset", type=int, help="use this many training images")
    parser.add_argument(
        "--epochs",
        type=int,
        help="epochs (default: the data set's recipe, CIFAR-100 240; the lr "
        "milestones are scaled to it)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="global batch size, shared out by the processes of a multi-process "
        "launch (default: the recipe's, CIFAR-100 64)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="projkd-runs", help="output folder")
    parser.add_argument("--teacher-arch", help="a projkd.models name")
    if student:
        parser.add_argument(
            "--teacher-weights", required=True, help="teacher.pt from train-teacher"
        )
        parser.add_argument("--student-arch", help="a projkd.models name")
    fast = parser.add_argument_group(
        "speed",
        "on CUDA the fast settings (bf16, compile, channels_last, data "
        "on the device) are on unless --no-fast",
    )
    fast.add_argument("--mixed-precision", choices=["bf16", "fp16"])
    fast.add_argument("--compile", action="store_const", const=True, default=None)
    fast.add_argument("--channels-last", action="store_const", const=True, default=None)
    fast.add_argument(
        "--no-fast", action="store_true", help="no fast settings by default on CUDA"
    )
    parser.add_argument(
        "--tensorboard", metavar="DIR", help="write TensorBoard event files to DIR"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    if student:
        parser.add_argument(
            "--epoch-metrics",
            action="store_true",
            help="record the training batches' ECE and CKA each epoch",
        )


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
    _common(teacher, student=False)

    distill = commands.add_parser("distill", help="distil a saved teacher")
    _common(distill, student=True)
    distill.add_argument("--n-projectors", type=int, default=3)
    distill.add_argument("--projector", default="linear", choices=["linear", "mlp"])
    distill.add_argument("--feature-weight", type=float, default=25.0)
    distill.add_argument("--kd-weight", type=float, default=0.0)
    distill.add_argument("--ce-weight", type=float, default=1.0)
    distill.add_argument("--logit-projector", action="store_true")

    search = commands.add_parser("search", help="cross-validated search")
    _common(search, student=True)
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

    from .reproduction import add_subcommand

    add_subcommand(commands)
    return parser


def spec_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~projkd.experiments.RunSpec` of a parsed command line."""
    from . import RunSpec

    return RunSpec(
        dataset=args.dataset,
        data_root=args.data_root,
        subset=args.subset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        device=args.device,
        seed=args.seed,
        out=args.out,
        teacher_arch=args.teacher_arch,
        teacher_weights=getattr(args, "teacher_weights", None),
        student_arch=getattr(args, "student_arch", None),
        mixed_precision=args.mixed_precision,
        compile=args.compile,
        channels_last=args.channels_last,
        fast=not args.no_fast,
        tensorboard=args.tensorboard,
        epoch_metrics=getattr(args, "epoch_metrics", False),
        progress=not args.no_progress,
    )


def _values(text: str) -> list[Any]:
    values = []
    for item in text.split(","):
        try:
            values.append(ast.literal_eval(item))
        except (ValueError, SyntaxError):
            values.append(item)  # a bare string
    return values


def _grid(args: argparse.Namespace) -> dict[str, list[Any]]:
    grid = {"n_projectors": _values(args.n_projectors)}
    for spec in args.param:
        name, _, values = spec.partition("=")
        if not values:
            raise SystemExit(f"--param {spec!r}: expected NAME=V1,V2")
        grid[name] = _values(values)
    return grid


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``projkd`` and ``python -m projkd``."""
    args = _parser().parse_args(argv)
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

    from .. import experiments
    from ..parallel.process import is_main_process

    spec = spec_from_args(args)
    if args.command == "train-teacher":
        record = experiments.train_teacher_run(spec)
        if is_main_process():  # one report from a parallel launch
            print(
                f"teacher: train {100 * record['train_acc']:.2f}%, test "
                f"{100 * record['test_acc']:.2f}% -> {Path(args.out) / 'teacher.pt'}"
            )
        return 0
    if args.command == "distill":
        experiments.distill(spec, **{name: getattr(args, name) for name in _METHOD})
    else:  # search
        experiments.search(spec, _grid(args), cv=args.cv, n_jobs=args.n_jobs)
    results = Path(args.out) / "results.md"
    if is_main_process() and results.exists():  # one report from a parallel launch
        print(results.read_text())
    return 0
