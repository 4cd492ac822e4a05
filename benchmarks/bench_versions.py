"""Host time of two versions of projkd, side by side in one process.

Ratios of separate runs on a shared machine move by 5-10% from one process
to the next; two versions measured in one process, epochs alternating,
see the same load. Point ``--base`` at another checkout's ``projkd``
package (for example a ``git worktree`` of an older commit)::

    git worktree add /tmp/base <commit>
    python benchmarks/bench_versions.py --base /tmp/base/projkd

The older package is copied under the name ``projkd_base`` (projkd imports
itself relatively), and both fit the same tiny MLP pair on random data --
the case where host overhead dominates -- with the teacher cache on and off,
one torch thread. It prints, per case, the median epoch CPU time of each
(``time.thread_time`` of the training thread, epochs of one fit without its
setup) and their ratio, this checkout over the base.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skorch.callbacks import Callback
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class EpochCPUTime(Callback):
    """Records each epoch's CPU time of the training thread (``thread_dur``)."""

    def on_epoch_begin(self, net: Any, **kwargs: Any) -> None:
        self.start_ = time.thread_time()

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        net.history.record("thread_dur", time.thread_time() - self.start_)


def fitted(package: Any, X: np.ndarray, y: np.ndarray, *, cached: bool) -> Any:
    """A distiller of ``package`` after one epoch (compiles nothing)."""
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4)).eval()
    student = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    return package.ProjectorDistiller(
        teacher,
        student,
        cache_teacher=cached,
        max_epochs=1,
        batch_size=64,
        lr=0.01,
        train_split=None,
        verbose=0,
        random_state=0,
        callbacks=[EpochCPUTime()],
    ).fit(X, y)


def compare(base: Any, ours: Any, *, cached: bool, epochs: int) -> tuple[float, float]:
    """Median epoch CPU seconds of ``base`` and ``ours``, epochs alternating
    (and which goes first alternating too)."""
    rng = np.random.RandomState(0)
    X = rng.randn(4096, 32).astype(np.float32)
    y = rng.randint(0, 4, 4096)
    nets = [fitted(base, X, y, cached=cached), fitted(ours, X, y, cached=cached)]
    times: list[list[float]] = [[], []]
    for epoch in range(epochs):
        for index in (0, 1) if epoch % 2 else (1, 0):
            nets[index].partial_fit(X, y)
            times[index].append(nets[index].history[-1, "thread_dur"])
    return statistics.median(times[0]), statistics.median(times[1])


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base",
        type=Path,
        required=True,
        help="another checkout's projkd package directory",
    )
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args(argv)
    if not (args.base / "__init__.py").is_file():
        parser.error(f"{args.base} is not a package directory (no __init__.py)")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        shutil.copytree(args.base, Path(folder) / "projkd_base")
        sys.path.insert(0, folder)
        base = importlib.import_module("projkd_base")
        ours = importlib.import_module("projkd")
        lines = [
            f"base {args.base} ({base.__version__}), ours {ours.__version__}; "
            f"medians of {args.epochs} alternating epochs, 64 steps each"
        ]
        for cached in (True, False):
            b, o = compare(base, ours, cached=cached, epochs=args.epochs)
            lines.append(
                f"teacher cache {'on ' if cached else 'off'}: base {b * 1e3:.1f} ms, "
                f"ours {o * 1e3:.1f} ms, ours / base {o / b:.3f}"
            )
    report = "\n".join(lines)
    print(report)
    return report


if __name__ == "__main__":
    main()
