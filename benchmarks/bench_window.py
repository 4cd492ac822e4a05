"""What a GPU window's ``reproduce --epochs auto`` will plan: counted here,
estimated for the card.

Run: python benchmarks/bench_window.py [--budget 360] [--out FILE]

For wrn_40_2 -> wrn_16_2 on CIFAR-100 (batch 64, 782 steps an epoch), it
*counts* on this machine, with projkd's own training steps (a
:class:`~projkd.teacher.TeacherNet` step of the teacher, a
:class:`~projkd.ProjectorDistiller` step of each of reproduce's six
variants, with the recipe's SGD and the device augmentation): the FLOPs of a
step (``torch.utils.flop_counter.FlopCounterMode``) and the aten operators
it dispatches at the top level (``torch.profiler``; on CUDA each launches
one kernel or more). From these counts it *estimates* a step's time on a
card of ``--peak`` bf16 FLOP/s: the larger of its FLOPs at that peak and its
operators at a per-operator cost, eager (``--eager-us``, the host's
dispatch and launch) or replayed as a CUDA graph (``--graph-us``, the
kernel's own minimum), and the epoch count a ``--budget`` second run of the
teacher and the six variants would get at 90% of it. The counts are
measurements; the seconds are an estimate, to be replaced by the card's own
warm-up (``reproduce --epochs auto`` measures them there).
"""

from __future__ import annotations

import argparse
import functools
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from projkd import ProjectorDistiller
from projkd.augment import RandomCropFlip
from projkd.experiments.reproduction import VARIANTS
from projkd.models import get_model
from projkd.teacher import TeacherNet

PAIR = ("wrn_40_2", "wrn_16_2")
SIX = ("alone", "kd", "fd0", "fd1", "fd3", "kd_lp")
BATCH, STEPS_PER_EPOCH, CLASSES = 64, 782, 100


def _sgd() -> dict:
    return dict(
        lr=0.05,
        optimizer=torch.optim.SGD,
        optimizer__momentum=0.9,
        optimizer__weight_decay=5e-4,
        batch_size=BATCH,
        train_split=None,
        verbose=0,
        classes=np.arange(CLASSES),
        random_state=0,
    )


def _nets(teacher: torch.nn.Module) -> dict:
    nets = {
        "teacher": TeacherNet(
            functools.partial(get_model, PAIR[0], num_classes=CLASSES),
            train_transform=RandomCropFlip(),
            **_sgd(),
        )
    }
    for name in SIX:
        nets[name] = ProjectorDistiller(
            teacher,
            student=functools.partial(get_model, PAIR[1], num_classes=CLASSES),
            train_transform=RandomCropFlip(),
            **VARIANTS[name],
            **_sgd(),
        )
    return nets


def _aten_calls(prof) -> int:
    """Operators called by the program, not by another operator: aten events
    with no aten event above them (autograd's and the optimizer's regions
    aside)."""

    def outermost(event) -> bool:
        parent = event.cpu_parent
        while parent is not None:
            if parent.name.startswith("aten::"):
                return False
            parent = parent.cpu_parent
        return True

    return sum(e.name.startswith("aten::") and outermost(e) for e in prof.events())


def count_step(net, X, y) -> tuple[float, float]:
    """FLOPs and operators of one training step of ``net``: an epoch of two
    steps minus an epoch of one (after a first fit builds the net)."""
    net.set_params(max_epochs=1).fit(X[:BATCH], y[:BATCH])
    with FlopCounterMode(display=False) as flops:
        net.partial_fit(X[:BATCH], y[:BATCH])
    counts = []
    for steps in (1, 2):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            net.partial_fit(X[: steps * BATCH], y[: steps * BATCH])
        counts.append(_aten_calls(prof))
    return float(flops.get_total_flops()), float(counts[1] - counts[0])


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=360.0)
    parser.add_argument("--peak", type=float, default=790e12, help="bf16 FLOP/s")
    parser.add_argument("--eager-us", type=float, default=10.0)
    parser.add_argument("--graph-us", type=float, default=3.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="The number of unique classes")
    torch.manual_seed(0)
    X = torch.randn(2 * BATCH, 3, 32, 32).numpy()
    y = np.arange(2 * BATCH) % CLASSES
    teacher = get_model(PAIR[0], num_classes=CLASSES).eval()
    rows = []
    for name, net in _nets(teacher).items():
        flops, ops = count_step(net, X, y)
        floor = flops / args.peak
        eager = max(floor, ops * args.eager_us * 1e-6)
        graph = max(floor, ops * args.graph_us * 1e-6)
        rows.append((name, flops, ops, floor, eager, graph))
    lines = [
        "# A GPU window's plan: counted on this machine, estimated for the card",
        "",
        f"`python benchmarks/bench_window.py --budget {args.budget:g}`: "
        f"{PAIR[0]} -> {PAIR[1]}, CIFAR-100 shapes, batch {BATCH}, the recipe's SGD "
        "and device augmentation. FLOPs and operators per step are **counted** "
        "(projkd's own steps, on the CPU); the milliseconds are an **estimate** "
        f"for a card of {args.peak / 1e12:.0f} TFLOP/s bf16 at {args.eager_us:g} "
        f"us per eager operator or {args.graph_us:g} us per graph-replayed kernel.",
        "",
        "| step | GFLOP | aten ops | FLOP floor ms | eager ms (est.) "
        "| graph ms (est.) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, flops, ops, floor, eager, graph in rows:
        lines.append(
            f"| {name} | {flops / 1e9:.1f} | {ops:.0f} | {1e3 * floor:.2f} | "
            f"{1e3 * eager:.2f} | {1e3 * graph:.2f} |"
        )
    lines.append("")
    for label, col in (("eager", 4), ("CUDA graphs", 5)):
        epoch = STEPS_PER_EPOCH * sum(row[col] for row in rows)
        epochs = math.floor(0.9 * args.budget / epoch)
        lines.append(
            f"- {label} (estimate): an epoch of the teacher and the six variants "
            f"{epoch:.0f} s, so about {epochs} epochs in 90% of {args.budget:g} s "
            "(before evaluation, checkpoints, compiling and start-up)."
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return text


if __name__ == "__main__":
    main()
