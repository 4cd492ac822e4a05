"""benchmarks/bench_gpu.py: its tiny CPU mode, and its GPU loops run on the CPU."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from projkd.models import DigitsCNN

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "bench_gpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_gpu", None)


def test_tiny_cpu_mode_writes_the_three_ratios(bench, tmp_path):
    out = tmp_path / "gpu_cpu.md"
    text = bench.main(["--cpu", "--tiny", "--out", str(out)])
    assert out.read_text() == text
    for row in ("bf16 - fp32", "uncached fp32 epoch", "cached step, tiny MLP"):
        line = next(line for line in text.splitlines() if row in line)
        value = line.split("|")[2].strip()
        assert np.isfinite(float(value)), line
    # the accuracy row's value is the difference of the two accuracies it shows
    line = next(line for line in text.splitlines() if "bf16 - fp32" in line)
    _, _, value, _, detail, _ = line.split("|")
    fp32, bf16 = (float(part.split()[-1]) for part in detail.split(","))
    assert float(value) == pytest.approx(100 * (bf16 - fp32), abs=0.1)


def test_gpu_loops_and_flop_count_run_on_the_cpu(bench):
    """The GPU mode's pieces, on tiny CIFAR-shaped nets for a few steps, so
    that a session with a GPU does not spend its budget on a bug."""

    def net(width=4):
        return DigitsCNN(width=width, n_features=8, num_classes=100, in_channels=3)

    device = torch.device("cpu")
    teacher = net(8).eval().requires_grad_(False)
    X = torch.randn(8, 3, 32, 32)
    Y = torch.randint(0, 100, (8,))
    ref = bench.reference_loop(teacher, net(), X, Y, 4, 1, device)
    hand = bench.hand_fast_loop(
        net(8).eval().requires_grad_(False),
        net(),
        X,
        Y,
        4,
        1,
        device,
        backend="eager",
    )
    ours = bench.projkd_fast(teacher, net(), X, Y.numpy(), 4, 2, device, "eager")
    assert min(ref, hand, ours) > 0
    flops = bench.step_flops(teacher, net(), 2, device)
    # the first conv alone: 2 images x 32 x 32 x 4 channels x 27 MACs x 2
    assert flops > 2 * 32 * 32 * 4 * 27 * 2
    assert bench.gemm_peak(device, n=32, repeats=2) > 0


def test_gpu_mode_refuses_without_cuda(bench):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available")
    with pytest.raises(SystemExit):
        bench.main(["--gpu"])
