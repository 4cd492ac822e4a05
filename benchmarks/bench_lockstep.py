"""Lockstep against separate fits: images/s of the six reproduce variants.

Run: python benchmarks/bench_lockstep.py [--quick] [--out FILE]

The variants of ``projkd reproduce`` (alone, kd, fd0, fd1, fd3, kd_lp) are
trained for one epoch on random CIFAR-shaped data, first one ``fit`` after
the other, then together with :func:`projkd.lockstep.fit_lockstep` (one
augmentation and one teacher forward per batch), side by side in one run, on
the same device: wrn_40_2 -> wrn_16_2 on CUDA (with reproduce's fast
settings), a tiny pair on the CPU (``--quick``, as the test suite could run
it). Prints student images/s both ways and their ratio; the first epoch of
each way is a warm-up (compilation) and is not timed.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import numpy as np
import torch

from projkd import ProjectorDistiller
from projkd.augment import RandomCropFlip
from projkd.experiments.reproduction import VARIANTS, fast_settings
from projkd.lockstep import EpochSeed, fit_lockstep
from projkd.models import get_model

#: reproduce's six variants of the paper's comparison
SIX = ("alone", "kd", "fd0", "fd1", "fd3", "kd_lp")


def estimators(teacher, arch, device, fast, epochs, n_classes):
    return [
        ProjectorDistiller(
            teacher,
            student=functools.partial(get_model, arch),
            student__num_classes=n_classes,
            classes=np.arange(n_classes),
            max_epochs=epochs,
            batch_size=64,
            lr=0.05,
            optimizer=torch.optim.SGD,
            optimizer__momentum=0.9,
            train_transform=RandomCropFlip(),
            train_split=None,
            verbose=0,
            random_state=0,
            device=device,
            callbacks=[("seed", EpochSeed(0))],
            **params,
            **fast,
        )
        for params in (VARIANTS[v] for v in SIX)
    ]


def seconds_per_epoch(fit, epochs):
    """Seconds of the epochs after the first (a warm-up), from the histories."""
    ests = fit()
    return float(np.mean([sum(e.history[1:, "dur"]) for e in ests])) / (epochs - 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="tiny CPU mode")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.quick
    device = "cuda" if cuda else "cpu"
    teacher_arch, student_arch, n = (
        ("wrn_40_2", "wrn_16_2", 10_000) if cuda else ("resnet8", "resnet8", 256)
    )
    n_classes, epochs = 100, 3 if cuda else 2
    torch.manual_seed(0)
    X = torch.randn(n, 3, 32, 32).numpy()
    y = np.random.default_rng(0).integers(0, n_classes, n)
    teacher = get_model(teacher_arch, num_classes=n_classes).to(device).eval()
    _, fast = fast_settings(device)

    def separate():
        ests = estimators(teacher, student_arch, device, fast, epochs, n_classes)
        return [est.fit(X, y) for est in ests]

    def lockstep():
        ests = estimators(teacher, student_arch, device, fast, epochs, n_classes)
        return fit_lockstep(ests, X, y)

    start = time.perf_counter()
    t_separate = seconds_per_epoch(separate, epochs) * len(SIX)
    # in lockstep every estimator's epoch spans the joint epoch of all of them
    t_lockstep = seconds_per_epoch(lockstep, epochs)
    name = torch.cuda.get_device_name() if cuda else "cpu"
    lines = [
        f"# Lockstep vs separate fits ({name})",
        "",
        f"{teacher_arch} -> {student_arch}, {len(SIX)} variants, {n} random "
        f"images, batch 64, crop + flip, fast settings {fast or 'none'}.",
        "",
        "| way | s per epoch (all variants) | student images/s |",
        "|---|---:|---:|",
        f"| separate fits | {t_separate:.2f} | {len(SIX) * n / t_separate:.0f} |",
        f"| lockstep | {t_lockstep:.2f} | {len(SIX) * n / t_lockstep:.0f} |",
        "",
        f"lockstep / separate speed: {t_separate / t_lockstep:.2f}x "
        f"(benchmark took {time.perf_counter() - start:.0f} s)",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
