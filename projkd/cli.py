"""The ``projkd`` command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="projkd", description="Projector-ensemble knowledge distillation."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="distil a digits teacher five ways and compare the students"
    )
    demo.add_argument("--epochs", type=int, default=30, help="epochs per model (30)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``projkd`` and ``python -m projkd``."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from .demo import main as demo_main

        return demo_main(epochs=args.epochs, random_state=args.seed)
    raise AssertionError(args.command)  # argparse rejects unknown commands
