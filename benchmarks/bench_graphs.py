"""The training step as one compiled graph against the eager step.

Side by side in one run, on the current device: the same distillation fit
(the recipe's SGD, momentum 0.9, weight decay 5e-4, batch 64, k = 3 linear
projectors, feature weight 25) eager and with ``compile=True`` (on CUDA
``compile__mode="reduce-overhead"``: the step's forward and backward
replayed as CUDA graphs), the two fits' epochs alternating. It prints, as a
markdown table, the median time of a training step after the first epoch
(which compiles), the ratio eager / compiled (> 1: the graph is faster),
each first epoch (the compile cost) and
the number of graphs the training step compiled into, counted by a second,
short fit with a recording backend (tracing only; 2 is one graph for the full
batches and one for the last, no graph break).

On CUDA (random CIFAR-shaped data resident on the GPU, resnet32x4 ->
resnet8x4, bf16 and channels_last as in the fast settings)::

    python benchmarks/bench_graphs.py --device cuda --out graphs.md

On a CPU there are no CUDA graphs, and inductor's compile time is paid on
few cores: expect no gain there; the figure that matters is on CUDA. A quick
CPU run (digits, a CNN with BatchNorm)::

    python benchmarks/bench_graphs.py --device cpu --backend aot_eager
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skorch.callbacks import Callback

from projkd import ProjectorDistiller
from projkd.data import load_digits
from projkd.models import DigitsCNN, get_model

RECIPE = dict(
    optimizer=torch.optim.SGD,
    optimizer__momentum=0.9,
    optimizer__weight_decay=5e-4,
    lr=0.05,
    n_projectors=3,
    feature_weight=25.0,
    train_split=None,
    verbose=0,
    random_state=0,
)


class Recorder:
    """A callable ``torch.compile`` backend that counts the graphs it gets."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, gm: Any, example_inputs: Any) -> Any:
        self.graphs += 1
        return gm.forward


def problem(device: str, tiny: bool) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
    """``(X, y, teacher, student, speed settings)`` for ``device``."""
    if device.startswith("cuda"):
        n = 64 * 8 if tiny else 64 * 100
        g = torch.Generator().manual_seed(0)
        X = torch.randn(n, 3, 32, 32, generator=g).numpy()
        y = torch.randint(0, 100, (n,), generator=g).numpy()
        teacher = get_model("resnet32x4", num_classes=100).eval()
        student = get_model("resnet8x4", num_classes=100)
        return X, y, teacher, student, dict(mixed_precision="bf16", channels_last=True)
    X, y = load_digits()
    if tiny:
        X, y = X[:300], y[:300]
    teacher = DigitsCNN(width=16).eval()
    return X, y, teacher, DigitsCNN(width=4), {}


class EpochClock(Callback):
    """Each epoch's time: the training thread's CPU time on a CPU (run with
    one torch thread; other jobs on a shared machine disturb it less than
    the wall clock), wall-clock time on CUDA (an epoch ends with one read of
    its device records, so the GPU's work is inside it)."""

    def __init__(self, cpu: bool) -> None:
        self.clock = time.thread_time if cpu else time.perf_counter
        self.times: list[float] = []

    def on_epoch_begin(self, net: Any, **kwargs: Any) -> None:
        self.start = self.clock()

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        self.times.append(self.clock() - self.start)


def alternate(
    X: Any, y: Any, teacher: Any, student: Any, epochs: int, runs: dict[str, Any]
) -> dict[str, tuple[float, float]]:
    """For each run (its parameters), the median step time of the epochs
    after the first and the first epoch's wall-clock time; the runs' epochs
    alternate (one epoch of each in turn), so a change in the machine's load
    falls on all of them. An eager epoch first fills the teacher cache,
    which the first epochs then share."""
    common = next(iter(runs.values()))
    cpu = not str(common["device"]).startswith("cuda")
    warm_up = {k: v for k, v in common.items() if not k.startswith("compile")}
    ProjectorDistiller(teacher, student, max_epochs=1, **{**RECIPE, **warm_up}).fit(
        X, y
    )
    clocks = {name: EpochClock(cpu) for name in runs}
    nets = {
        name: ProjectorDistiller(
            teacher,
            student,
            max_epochs=1,
            callbacks=[clocks[name]],
            **{**RECIPE, **params},
        )
        for name, params in runs.items()
    }
    for epoch in range(epochs):
        for net in nets.values():
            (net.fit if epoch == 0 else net.partial_fit)(X, y)
    result = {}
    for name, net in nets.items():
        assert np.isfinite(net.history[-1, "train_loss"]), name
        steps = len(net.history[-1, "batches"])
        times = clocks[name].times
        # the first epoch in wall-clock time: compilation runs in workers too
        result[name] = (statistics.median(times[1:]) / steps, net.history[0, "dur"])
    return result


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default)
    parser.add_argument("--epochs", type=int, default=6, help="at least 2")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads on a CPU (default 1)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backend", default="inductor", help="torch.compile's backend")
    parser.add_argument(
        "--mode",
        default=None,
        help="torch.compile's mode (default: reduce-overhead on CUDA with "
        "inductor, else none)",
    )
    parser.add_argument("--tiny", action="store_true", help="a seconds-long run")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error(f"--epochs {args.epochs}: the first epoch compiles; use >= 2")
    cuda = args.device.startswith("cuda")
    threads = torch.get_num_threads()
    if not cuda:
        torch.set_num_threads(args.threads)
    try:
        return measure(args, cuda)
    finally:
        torch.set_num_threads(threads)


def measure(args: argparse.Namespace, cuda: bool) -> str:
    """Run the three fits and write the table (see the module's docstring)."""
    mode = args.mode
    if mode is None and cuda and args.backend == "inductor":
        mode = "reduce-overhead"
    X, y, teacher, student, speed = problem(args.device, args.tiny)
    common = dict(device=args.device, batch_size=args.batch_size, **speed)
    compile_kwargs: dict[str, Any] = {"compile__backend": args.backend}
    if mode is not None:
        compile_kwargs["compile__mode"] = mode

    torch.compiler.reset()
    runs = {"eager": common, "compiled": {**common, "compile": True, **compile_kwargs}}
    times = alternate(X, y, teacher, student, args.epochs, runs)
    (eager_step, eager_first), (graph_step, graph_first) = times.values()
    torch.compiler.reset()
    recorder = Recorder()
    counted = {"counted": {**common, "compile": True, "compile__backend": recorder}}
    alternate(X, y, teacher, student, 2, counted)
    torch.compiler.reset()

    card = torch.cuda.get_device_name(args.device) if cuda else "CPU"
    ratio = eager_step / graph_step
    setting = f"backend={args.backend}" + (f", mode={mode}" if mode else "")
    lines = [
        f"# One compiled graph per training step: {card}, {setting}",
        "",
        f"{len(X)} samples, batch {args.batch_size}, {args.epochs} epochs, "
        f"{type(student).__name__} student, settings {speed or 'fp32'}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load "
        f"average {os.getloadavg()[0]:.1f} at the end (a shared machine). "
        f"{'Training-thread CPU' if not cuda else 'Wall-clock'} time, medians "
        "of the epochs after the first, the two fits' epochs alternating in one "
        "run; the first epoch in wall-clock time, with the compilation (less "
        "when torch's on-disk compile cache already has the graphs); graphs "
        "counted by a recording backend.",
        "",
        "| measure | eager | compiled | eager / compiled |",
        "|---|---|---|---|",
        f"| step after epoch 1 (ms) | {1e3 * eager_step:.2f} | "
        f"{1e3 * graph_step:.2f} | {ratio:.2f} |",
        f"| first epoch, wall clock (s) | {eager_first:.2f} | {graph_first:.2f} | "
        f"{eager_first / graph_first:.2f} |",
        f"| graphs of the training step | - | {recorder.graphs} | - |",
        "",
    ]
    if not cuda:
        lines.append(
            "On a CPU there are no CUDA graphs to replay: no speed-up is "
            "expected here, and none is claimed; the figure that matters is "
            "measured on CUDA."
        )
    elif ratio < 1:
        lines.append(
            "The compiled step is slower on this card: leave compile=False here."
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return text


if __name__ == "__main__":
    sys.exit(main() and 0)
