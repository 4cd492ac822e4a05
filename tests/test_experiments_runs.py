"""Whole runs of the commands: reproducible across processes, best epoch
recorded beside the final one, TensorBoard events written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from projkd.experiments.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "digits", "--subset", "200", "--no-progress"]


def _run_in_processes(code: str, folders: list[Path]) -> list[str]:
    """Run ``code`` (formatted with each folder) in separate processes at once."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code.format(out=str(folder))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for folder in folders
    ]
    outputs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-2000:]
        outputs.append(stdout)
    return outputs


def test_cli_and_demo_runs_are_identical_in_separate_processes(tmp_path):
    code = (
        "from projkd.experiments.cli import main\n"
        "from projkd.experiments.demo import main as demo\n"
        f"tiny = {TINY!r}\n"
        "main(['train-teacher', *tiny, '--epochs', '2', '--out', '{out}/t'])\n"
        "main(['distill', *tiny, '--epochs', '2', '--out', '{out}/s',\n"
        "      '--teacher-weights', '{out}/t/teacher.pt'])\n"
        # measured timings differ between runs; everything else may not
        "demo(epochs=1, random_state=3, out=None, cost=False)\n"
    )
    first, second = tmp_path / "a", tmp_path / "b"
    printed = _run_in_processes(code, [first, second])
    for name in ("t/results.json", "s/results.json", "s/history.json"):
        a, b = (first / name).read_bytes(), (second / name).read_bytes()
        if name.endswith("history.json"):  # durations differ; nothing else may
            a, b = (_no_durations(json.loads(x)) for x in (a, b))
        assert a == b, name
    # the printed tables (teacher, students, demo) are the same, byte for byte
    a, b = (
        text.replace(str(folder), "OUT")
        for text, folder in zip(printed, (first, second), strict=True)
    )
    assert "| feature, 3 projectors |" in a
    assert a == b


def _no_durations(history):
    return [{k: v for k, v in row.items() if k != "dur"} for row in history]


def test_distill_records_best_epoch_and_writes_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import (
        EventAccumulator,
    )

    teacher, student, logs = tmp_path / "t", tmp_path / "s", tmp_path / "tb"
    assert main(["train-teacher", *TINY, "--epochs", "1", "--out", str(teacher)]) == 0
    argv = [
        "distill",
        *TINY,
        "--epochs",
        "3",
        "--kd-weight",
        "0.5",
        "--teacher-weights",
        str(teacher / "teacher.pt"),
        "--out",
        str(student),
        "--tensorboard",
        str(logs),
        "--epoch-metrics",
    ]
    assert main(argv) == 0
    record = json.loads((student / "results.json").read_text())[-1]
    history = json.loads((student / "history.json").read_text())
    test_accs = [row["test_acc"] for row in history]
    assert len(test_accs) == 3
    # final accuracy is the last epoch's; best is the maximum over epochs
    assert record["test_acc"] == pytest.approx(test_accs[-1])
    assert record["best_test_acc"] == max(test_accs)
    assert test_accs[record["best_epoch"] - 1] == max(test_accs)
    events = EventAccumulator(str(logs))
    events.Reload()
    tags = " ".join(events.Tags()["scalars"])
    for name in ("train_loss", "train_ce", "train_kd", "train_feat", "train_acc"):
        assert name in tags
    for name in ("test_acc", "lr", "train_ece", "train_cka"):
        assert name in tags
    lr = [event.value for event in events.Scalars(_tag(events, "lr"))]
    assert len(lr) == 3 and lr[0] == pytest.approx(3e-3)


def _tag(events, name):
    return next(tag for tag in events.Tags()["scalars"] if tag.endswith(name))
