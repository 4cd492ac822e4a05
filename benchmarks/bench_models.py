"""CPU throughput of the CIFAR zoo, and the cost of batch augmentation.

Run: python benchmarks/bench_models.py [--quick]

For resnet8x4, resnet32x4, wrn_40_2 and wrn_16_2 (100 classes, 3x32x32):
training images/s (forward + backward + SGD step, batch 64) and inference
images/s (eval, no grad, batch 256); then RandomCropFlip's time on a batch of
64 as a fraction of one training step of each model, measured side by side.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from projkd.augment import RandomCropFlip
from projkd.models import get_model
from projkd.utils import seeded

MODELS = ("resnet8x4", "resnet32x4", "wrn_40_2", "wrn_16_2")


def timed(fn, repeat):
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def measure(
    name: str, x_train, y_train, x_eval, repeat: int
) -> tuple[float, float, float]:
    """Parameters (M), seconds per training step, seconds per inference batch."""
    with seeded(0, "cpu"):  # the same weights in every process
        model = get_model(name)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def train_step():
        model.train()
        optimizer.zero_grad()
        F.cross_entropy(model(x_train), y_train).backward()
        optimizer.step()

    @torch.no_grad()
    def infer():
        model.eval()
        model(x_eval)

    params = sum(p.numel() for p in model.parameters()) / 1e6
    return params, timed(train_step, repeat), timed(infer, max(1, repeat // 2))


def main(quick: bool = False) -> None:
    torch.manual_seed(0)
    repeat = 2 if quick else 5
    x_train, y_train = torch.rand(64, 3, 32, 32), torch.randint(0, 100, (64,))
    x_eval = torch.rand(256, 3, 32, 32)
    augment = RandomCropFlip()
    t_augment = timed(lambda: augment(x_train), 50)
    print(
        f"threads: {torch.get_num_threads()}; RandomCropFlip, batch 64: "
        f"{1e3 * t_augment:.2f} ms\n"
    )
    print("| model | params (M) | train img/s | inference img/s | augment / step |")
    print("|---|---:|---:|---:|---:|")
    for name in MODELS:
        params, t_train, t_infer = measure(name, x_train, y_train, x_eval, repeat)
        print(
            f"| {name} | {params:.2f} | {64 / t_train:,.0f} | {256 / t_infer:,.0f} "
            f"| {100 * t_augment / t_train:.2f}% |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    main(parser.parse_args().quick)
