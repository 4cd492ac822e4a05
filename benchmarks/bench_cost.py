"""What the CIFAR-100 benchmark's students save: parameters, MACs, speed.

Run: python benchmarks/bench_cost.py [--quick] [--device cpu] [--out FILE]

For the teacher -> student pairs of METHOD.md's anchor table: parameters,
multiply-accumulates per 3x32x32 image (projkd.analysis.cost.count_macs; FLOPs / 2 of
torch's FlopCounterMode) and inference latency measured side by side on one
device by projkd.analysis.cost.model_costs, as compare(cost=True) measures it:
the networks interleaved in rotating rounds, at batch 1 (30 rounds) and batch
64 (5 rounds) after two warm-up passes each, the median kept and its spread
(the width of its 95% interval over it) reported; on the CPU one thread, timed
as its CPU time. Then the sentence projkd.analysis.cost.cost_sentence renders
for each pair ("noisy" where a spread is too wide to call). No accuracy here:
see quality_cifar100.md for that.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from projkd.analysis.cost import cost_sentence, is_noisy, model_costs
from projkd.models import get_model

PAIRS = (
    ("wrn_40_2", "wrn_16_2"),
    ("wrn_40_2", "wrn_40_1"),
    ("resnet32x4", "resnet8x4"),
    ("vgg13", "vgg8"),
    ("vgg13", "MobileNetV2"),
    ("ResNet50", "MobileNetV2"),
)
SHAPE = (3, 32, 32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    # (batch size, timed repeats): batch 64 of ResNet50 is ~80 GMACs a pass
    plan = ((1, 5), (64, 2)) if args.quick else ((1, 30), (64, 5))
    names = sorted({name for pair in PAIRS for name in pair})
    models = {name: get_model(name).to(args.device) for name in names}
    costs = {}
    for batch, repeats in plan:
        measured = model_costs(
            models, SHAPE, batch_size=batch, warmup=2, repeats=repeats
        )
        for name, cost in measured.items():
            costs[name, batch] = cost
            print(f"{name} batch {batch}: {cost}", flush=True)
    device = costs[names[0], 1].device
    cpu = platform.processor() or platform.machine()
    threads = 1 if device == "cpu" else torch.get_num_threads()

    def spread(cost) -> str:
        return f"{100 * cost.latency_spread:.0f}" + (" noisy" if is_noisy(cost) else "")

    lines = [
        f"# Cost of the zoo's networks ({device}: {cpu}, "
        f"torch {torch.__version__}, {threads} thread{'s' * (threads > 1)})",
        "",
        "| network | params (M) | MACs (M) | batch 1 ms | spread % | "
        "batch 64 images/s | spread % |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        one, many = costs[name, 1], costs[name, 64]
        lines.append(
            f"| {name} | {one.params / 1e6:.2f} | {one.macs / 1e6:.1f} | "
            f"{one.latency_ms:.2f} | {spread(one)} | {many.images_per_s:.0f} | "
            f"{spread(many)} |"
        )
    lines += ["", "Teacher -> student (cost_sentence):", ""]
    for teacher, student in PAIRS:
        for batch in (1, 64):
            sentence = cost_sentence(
                costs[teacher, batch], costs[student, batch], name=student
            )
            lines.append(f"- {teacher} -> {sentence}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
