"""The ``projkd`` command line: a thin front over :mod:`projkd.experiments`.

Each command's arguments become one :class:`~projkd.experiments.RunSpec`
(plus the command's own parameters), handed to its function. A mistake
ends in one line, ``projkd <command>: error: ...``, and exit status 2
(:mod:`projkd.experiments.errors`).
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from ..errors import InputError, MissingFileError
from .arguments import (
    at_least,
    count_or_all,
    non_negative_float,
    non_negative_int,
    nonzero_int,
    positive_int,
)
from .errors import error_boundary
from .io import output_folder
from .spec import EPOCH_TEST_IMAGES

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


def _common(
    parser: argparse.ArgumentParser,
    *,
    student: bool,
    out: str,
    epoch_test: bool = True,
) -> None:
    from . import DATASETS, DEFAULT_ARCHS

    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default="digits",
        help="the data set (default: digits, built in; the others need --data-root)",
    )
    parser.add_argument(
        "--data-root", help="folder of the data set's files (default: none)"
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="download MNIST or CIFAR-100 into --data-root (torchvision's; "
        "default: off)",
    )
    parser.add_argument(
        "--subset",
        type=positive_int,
        help="use this many training images (default: all)",
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        help="epochs (default: the data set's recipe, CIFAR-100 240, digits and "
        "MNIST 20; the lr milestones are scaled to it)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        help="global batch size, shared out by the processes of a multi-process "
        "launch (default: the recipe's, 64)",
    )
    parser.add_argument(
        "--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)"
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seeds the data split, the networks and their training (default: 0)",
    )
    parser.add_argument(  # one folder per command: a run never overwrites another
        "--out",
        default=out,
        help=f"output folder, made before anything trains (default: {out})",
    )
    for index, role in enumerate(("teacher", "student")[: 1 + student]):
        archs = ", ".join(f"{name} {a[index]}" for name, a in DEFAULT_ARCHS.items())
        parser.add_argument(
            f"--{role}-arch",
            help=f"a projkd.models name (default: the data set's, {archs})",
        )
    if student:
        parser.add_argument(
            "--teacher-weights", required=True, help="teacher.pt from train-teacher"
        )
    if epoch_test:
        parser.add_argument(
            "--epoch-test-images",
            type=count_or_all,
            default=EPOCH_TEST_IMAGES,
            metavar="N",
            help="score each epoch on a fixed subset of N test images, the last "
            "epoch on all of them; 'all': every image each epoch (default: "
            f"{EPOCH_TEST_IMAGES})",
        )
    fast = parser.add_argument_group(
        "speed",
        "on CUDA the fast settings (bf16, compile, channels_last, data "
        "on the device) are on unless --no-fast",
    )
    fast.add_argument(
        "--mixed-precision",
        choices=["bf16", "fp16"],
        help="autocast precision (default: fp32; bf16 on CUDA unless --no-fast)",
    )
    fast.add_argument(
        "--compile",
        action="store_const",
        const=True,
        default=None,
        help="torch.compile the training step (default: off; on with CUDA "
        "unless --no-fast)",
    )
    fast.add_argument(
        "--channels-last",
        action="store_const",
        const=True,
        default=None,
        help="channels-last memory format (default: off; on with CUDA unless "
        "--no-fast)",
    )
    fast.add_argument(
        "--no-fast",
        action="store_true",
        help="no fast settings by default on CUDA (default: off)",
    )
    parser.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="write TensorBoard event files to DIR (default: none)",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (default: a bar per epoch)",
    )
    if student:
        parser.add_argument(
            "--epoch-metrics",
            action="store_true",
            help="record the training batches' ECE and CKA each epoch (default: off)",
        )


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose errors only the main process of a parallel
    launch prints (every process got the same command line)."""

    def error(self, message: str) -> NoReturn:
        from ..parallel.process import process_index

        if process_index() != 0:
            raise SystemExit(2)
        super().error(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="projkd", description="Projector-ensemble knowledge distillation."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="distil a digits teacher five ways")
    demo.add_argument(
        "--epochs",
        type=positive_int,
        default=30,
        help="epochs per student; the teacher trains twice as long (default: 30)",
    )
    demo.add_argument(
        "--seed", type=non_negative_int, default=0, help="random seed (default: 0)"
    )
    demo.add_argument(
        "--out",
        default="projkd-demo",
        help="folder for the table and plots (default: projkd-demo)",
    )

    teacher = commands.add_parser("train-teacher", help="train and save a teacher")
    _common(teacher, student=False, out="projkd-teacher")

    distill = commands.add_parser("distill", help="distil a saved teacher")
    _common(distill, student=True, out="projkd-student")
    distill.add_argument(
        "--n-projectors",
        type=non_negative_int,
        default=3,
        help="projectors in the ensemble; 0: none, needs equal feature widths "
        "(default: 3)",
    )
    distill.add_argument(
        "--projector",
        default="linear",
        choices=["linear", "mlp"],
        help="each projector's form (default: linear)",
    )
    for name, default, term in (
        ("feature", 25.0, "the feature loss (1 - cosine)"),
        ("kd", 0.0, "the KD loss on the logits"),
        ("ce", 1.0, "the cross-entropy with the labels"),
    ):
        distill.add_argument(
            f"--{name}-weight",
            type=non_negative_float,
            default=default,
            help=f"weight of {term} (default: {default:g})",
        )
    distill.add_argument(
        "--logit-projector",
        action="store_true",
        help="compute the KD loss on a linear projector of the student's logits "
        "(default: off)",
    )

    search = commands.add_parser("search", help="cross-validated search")
    _common(search, student=True, out="projkd-search", epoch_test=False)
    search.add_argument(
        "--n-projectors",
        default="1,2,3,4",
        help="comma-separated values to search (default: 1,2,3,4)",
    )
    search.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="another estimator parameter to search; repeatable (default: none)",
    )
    search.add_argument(
        "--cv",
        type=at_least(2),
        default=3,
        help="cross-validation folds, 2 or more (default: 3)",
    )
    search.add_argument(
        "--n-jobs",
        type=nonzero_int,
        default=None,
        help="candidates fitted in parallel; -1: one per core (default: 1)",
    )

    report = commands.add_parser("report", help="table and plots of saved students")
    report.add_argument("runs", nargs="+", help="folders written by distill")
    report.add_argument(
        "--out",
        default="projkd-report",
        help="folder for the table and plots (default: projkd-report)",
    )
    report.add_argument(
        "--device",
        default="cpu",
        help="where the students are evaluated and timed (default: cpu)",
    )

    from .reproduction import add_subcommand

    add_subcommand(commands)
    for command in commands.choices.values():
        command.add_argument(
            "--traceback",
            action="store_true",
            help="show the full traceback of an error (also PROJKD_TRACEBACK=1; "
            "default: off)",
        )
    return parser


def spec_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~projkd.experiments.RunSpec` of a parsed command line."""
    from . import RunSpec

    return RunSpec(
        dataset=args.dataset,
        data_root=args.data_root,
        download=args.download,
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
        epoch_test_images=getattr(args, "epoch_test_images", EPOCH_TEST_IMAGES),
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
        name = name.strip()
        if not name.isidentifier() or not values or "" in values.split(","):
            raise InputError(
                f"--param {spec!r} does not parse: expected NAME=V1,V2 (a "
                "parameter name, then comma-separated values), e.g. "
                "--param feature_weight=1,25"
            )
        grid[name] = _values(values)
    return grid


def _paths(args: argparse.Namespace) -> list[str]:
    """The files and folders the user named (for the error boundary)."""
    names = ("data_root", "teacher_weights", "tensorboard")
    paths = [getattr(args, name, None) for name in names]
    return [str(path) for path in [*paths, *getattr(args, "runs", [])] if path]


def _check_inputs(args: argparse.Namespace) -> None:
    """Refuse a missing or unreadable file named on the command line, and
    make every output folder, before anything runs (so that a parallel
    launch reports a mistake once, and a typo never costs a finished run)."""
    from ..models import check_weights_file
    from .data import check_data_root

    if getattr(args, "teacher_weights", None) is not None:
        check_weights_file(args.teacher_weights)
    if getattr(args, "dataset", None) is not None:
        check_data_root(
            args.dataset, args.data_root, download=getattr(args, "download", False)
        )
    for run in getattr(args, "runs", []):
        if not Path(run).is_dir():
            raise MissingFileError(
                f"no run folder at {run!r}: give folders written by projkd distill"
            )
    # every output location, made before anything trains
    for flag in ("out", "tensorboard"):
        if getattr(args, flag, None) is not None:
            output_folder(getattr(args, flag), f"--{flag}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``projkd`` and ``python -m projkd``.

    Returns
    -------
    status : int
        0 on success, 3 when ``reproduce`` stopped on its time budget.

    Raises
    ------
    SystemExit
        With status 2 for a bad command line or any other user error (one
        line on standard error, no traceback; see
        :mod:`projkd.experiments.errors`).
    """
    args = _parser().parse_args(argv)
    boundary = dict(
        prog=f"projkd {args.command}",
        paths=_paths(args),
        show_traceback=args.traceback,
    )
    with error_boundary(**boundary, alike=True):  # the command line itself
        _check_inputs(args)
        runs = ("train-teacher", "distill", "search")
        spec = spec_from_args(args) if args.command in runs else None
        grid = _grid(args) if args.command == "search" else None
    with error_boundary(**boundary):
        return _run(args, spec, grid)


def _run(args: argparse.Namespace, spec: Any, grid: Any) -> int:
    if args.command == "reproduce":
        return int(args.handler(args))
    if args.command == "demo":
        from .demo import main as demo_main

        return demo_main(epochs=args.epochs, random_state=args.seed, out=args.out)

    if args.command == "report":
        from .progress import PhaseLog
        from .report import report

        log = PhaseLog("projkd report")
        report(args.runs, out=args.out, device=args.device, progress=log)
        log(f"done: {Path(args.out) / 'results.md'} and the plots")
        print((Path(args.out) / "results.md").read_text())
        return 0

    from .. import experiments
    from ..parallel.process import is_main_process

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
        experiments.search(spec, grid, cv=args.cv, n_jobs=args.n_jobs)
    results = Path(args.out) / "results.md"
    if is_main_process() and results.exists():  # one report from a parallel launch
        print(results.read_text())
    return 0
