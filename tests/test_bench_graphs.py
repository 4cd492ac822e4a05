"""benchmarks/bench_graphs.py: a seconds-long CPU run of its table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "bench_graphs.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_graphs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_graphs"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_graphs", None)
    torch.compiler.reset()


def test_tiny_cpu_run_writes_the_ratios_and_two_graphs(bench, tmp_path):
    out = tmp_path / "graphs.md"
    argv = ["--device", "cpu", "--backend", "eager", "--tiny", "--epochs", "2"]
    text = bench.main([*argv, "--out", str(out)])
    assert out.read_text() == text
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and "measure" not in line:
            cells = [cell.strip() for cell in line.split("|")[1:-1]]
            rows[cells[0]] = cells[1:]
    assert float(rows["step after epoch 1 (ms)"][2]) > 0
    assert rows["graphs of the training step"][1] == "2"  # full and last batch
    assert "no speed-up is expected here" in text


def test_one_epoch_is_refused(bench):
    with pytest.raises(SystemExit):
        bench.main(["--device", "cpu", "--epochs", "1"])
