"""``projkd reproduce`` on the command line: its flags and how it runs.

Every numeric flag goes through the shared argument types
(:mod:`projkd.experiments.arguments`), so that a value out of range is
refused by ``argparse`` in one line before anything runs; every option's
help states its default.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ...parallel.process import is_main_process
from ..arguments import (
    count_or_all,
    non_negative_int,
    positive_float,
    positive_int,
    positive_int_or,
)
from .command import DEFAULT_PAIRS, reproduce
from .planning import PLAN_FRACTION, PLAN_LIMIT
from .training import process_start
from .variants import VARIANTS

__all__ = ["add_subcommand", "epochs_arg", "run_command"]


def _names(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


#: ``--epochs``: ``auto`` or a positive integer.
epochs_arg = positive_int_or("auto", "auto")


def add_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``projkd reproduce`` on a command line's subcommands.

    Parameters
    ----------
    subparsers : object
        What :meth:`argparse.ArgumentParser.add_subparsers` returned (its
        ``add_parser`` method is called).

    Returns
    -------
    parser : argparse.ArgumentParser
        The subcommand's parser; the parsed namespace's ``handler``
        (:func:`run_command`) runs the command.

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="projkd")
    >>> _ = add_subcommand(parser.add_subparsers(dest="command"))
    >>> parser.parse_args(["reproduce", "--dataset", "digits"]).dataset
    'digits'
    """
    sub = subparsers.add_parser(
        "reproduce",
        help="the paper's comparison of variants, resumable (CIFAR-100)",
        description="Train (or load) a teacher, distil it into the student of "
        "the pair once per variant and seed, and write results.json, results.md "
        "and plots. Re-running the same command continues where it stopped; "
        "--resume-from continues in a later session from the state an earlier "
        "one brought back.",
    )
    sub.add_argument(
        "--dataset",
        choices=list(DEFAULT_PAIRS),
        default="cifar100",
        help="the data set (default: cifar100)",
    )
    sub.add_argument(
        "--data-root",
        help="folder of the data set's files (default: none; digits needs none)",
    )
    sub.add_argument(
        "--download",
        action="store_true",
        help="download CIFAR-100 or MNIST into --data-root (torchvision's; "
        "default: off)",
    )
    pairs = ", ".join(f"{name} {pair}" for name, pair in DEFAULT_PAIRS.items())
    sub.add_argument(
        "--pair", help=f"TEACHER:STUDENT (default: the data set's, {pairs})"
    )
    sub.add_argument(
        "--variants",
        type=_names,
        default=list(VARIANTS),
        help=f"comma-separated, of {','.join(VARIANTS)} (default: all of them)",
    )
    sub.add_argument(
        "--epochs",
        type=epochs_arg,
        help="epochs per network, or 'auto' with --time-budget: planned to end "
        f"at {100 * PLAN_FRACTION:.0f}%% of the budget (default: the recipe's, "
        "240 on cifar100, 20 on digits and mnist)",
    )
    sub.add_argument(
        "--min-epochs",
        type=positive_int,
        default=10,
        help="with --epochs auto: refuse when fewer fit (default: 10)",
    )
    sub.add_argument(
        "--seeds",
        type=positive_int,
        default=1,
        help="students per variant, seeds 0, 1, ... (default: 1)",
    )
    sub.add_argument(
        "--out",
        default="runs/repro",
        help="output folder, made before anything trains (default: runs/repro)",
    )
    sub.add_argument(
        "--teacher-weights",
        help="a teacher state_dict; skips training one (default: train one)",
    )
    sub.add_argument(
        "--resume-from",
        metavar="PATH",
        help="continue an earlier session's runs: the state.tar.xz that "
        "benchmarks/gpu_session.sh brought back, a folder holding it (with the "
        "teacher's .pt), or a run folder; restored into --out first (default: "
        "none)",
    )
    sub.add_argument(
        "--time-budget",
        type=positive_float,
        metavar="SECONDS",
        help="seconds this call may take, counted from the interpreter's start; "
        f"a planned call is stopped past {100 * PLAN_LIMIT:.0f}%% of it; run it "
        "again to continue (default: none)",
    )
    sub.add_argument(
        "--subset",
        type=positive_int,
        help="use this many training images (default: all)",
    )
    sub.add_argument(
        "--epoch-test-images",
        type=count_or_all,
        default=None,
        metavar="N",
        help="score each epoch on a fixed subset of N test images, the last "
        "epoch on all of them (default: all, each epoch, as the published "
        "tables' best epoch)",
    )
    sub.add_argument(
        "--device",
        default="auto",
        help="auto, cpu, cuda, cuda:1, ... (default: auto, CUDA when available)",
    )
    sub.add_argument(
        "--no-fast",
        action="store_true",
        help="on CUDA: fp32, eager, no channels_last (default: the fast settings)",
    )
    sub.add_argument(
        "--batch-size",
        type=positive_int,
        help="deviate from the recipe's batch, lr scaled linearly; recorded "
        "(default: the recipe's, 64)",
    )
    sub.add_argument(
        "--warmup-epochs",
        type=non_negative_int,
        help="linear lr warm-up epochs; recorded (default: 2 with a batch above "
        "the recipe's, else 0)",
    )
    sub.add_argument(
        "--lockstep",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train each seed's variants together, one teacher forward per batch "
        "(default: with --epochs auto, when the warm-up measures it faster; "
        "otherwise off)",
    )
    sub.add_argument(
        "--quiet",
        action="store_true",
        help="no line per epoch (default: a line per epoch on stderr)",
    )
    sub.set_defaults(handler=run_command)
    return sub


def run_command(args: argparse.Namespace) -> int:
    """Run ``projkd reproduce`` from its parsed arguments and print the table.

    Returns
    -------
    status : int
        0 when every run has finished, 3 when some are left for the next call.
    """
    results = reproduce(
        dataset=args.dataset,
        data_root=args.data_root,
        download=args.download,
        pair=args.pair,
        variants=args.variants,
        epochs=args.epochs,
        min_epochs=args.min_epochs,
        seeds=args.seeds,
        out=args.out,
        teacher_weights=args.teacher_weights,
        resume_from=args.resume_from,
        time_budget=args.time_budget,
        subset=args.subset,
        epoch_test_images=args.epoch_test_images,
        device=args.device,
        fast=not args.no_fast,
        batch_size=args.batch_size,
        warmup_epochs=args.warmup_epochs,
        lockstep=args.lockstep,
        verbose=not args.quiet,
        started=process_start(),
    )
    if is_main_process():
        print((Path(args.out) / "results.md").read_text())
    return 0 if results["complete"] else 3
