"""A rehearsal of ``benchmarks/gpu_session.sh run`` on the CPU, at digits scale.

Each call is a "machine" of its own (empty data, runs, state and carry
folders): what the next one knows of the previous one is only the files that
came back in its ``$OUT``, carried in ``$CARRY/state`` as a later session
would carry ``.gpu/state``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from projkd.experiments.reproduction.state import pack_state
from projkd.experiments.reproduction.training import sha256

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_session.sh"
BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="needs bash")
TINY = dict(
    DATASET="digits",
    PAIR="digits_teacher:digits_student",
    VARIANTS="alone",
    EXTRA="--subset 120",
)


def _machine(tmp: Path, carried: Path | None = None, **settings: str):
    """Run ``gpu_session.sh run`` on a fresh "machine" under ``tmp``, carrying
    the files of ``carried`` (an earlier call's ``$OUT``) as its state."""
    folders = {name: tmp / name.lower() for name in ("DATA", "RUNS", "STATE", "OUT")}
    folders["CARRY"] = tmp / "carry"
    if carried is not None:
        shutil.copytree(carried, folders["CARRY"] / "state")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("RESUME", "EPOCHS", "BUDGET")
    }
    env.update(
        PYTHON=sys.executable, PYTHONPATH=str(ROOT), SITE=str(tmp / "site"), **TINY
    )
    env.update({name: str(path) for name, path in folders.items()}, **settings)
    done = subprocess.run(
        [BASH, str(SCRIPT), "run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = folders["OUT"]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8, files  # what the device tool brings back
    assert all((out / name).stat().st_size < 16 * 2**20 for name in files)
    return done, out, files


def _members(archive: Path) -> list[str]:
    with tarfile.open(archive) as tar:
        return tar.getnames()


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    """Three machines: stopped on the budget after the teacher's first epoch,
    resumed to the end, and resumed from a finished state."""
    calls = []
    carried = None
    for name, budget in (("first", "1e-6"), ("second", "600"), ("third", "600")):
        tmp = tmp_path_factory.mktemp(name)
        calls.append(_machine(tmp, carried, EPOCHS="2", BUDGET=budget))
        carried = calls[-1][1]
    return calls


def test_a_call_stopped_on_its_budget_brings_back_its_state(sessions):
    done, out, files = sessions[0]
    assert done.returncode == 3, done.stdout + done.stderr
    assert files == [
        "digits_repro_e2.json",
        "digits_repro_e2.md",
        "reproduce.log",
        "state.tar.xz",
    ]
    results = json.loads((out / "digits_repro_e2.json").read_text())
    assert results["pending"][0] == "teacher" and not results["complete"]
    members = _members(out / "state.tar.xz")
    assert "settings.json" in members
    assert any(m.startswith("teacher/ckpt/") and "history" in m for m in members)
    assert "no nvidia-smi" in (out / "reproduce.log").read_text()


def test_a_new_machine_resumes_from_the_files_that_came_back(sessions):
    done, out, files = sessions[1]
    assert done.returncode == 0, done.stdout + done.stderr
    assert "state in" in done.stdout  # the carried state, moved to $STATE
    log = (out / "reproduce.log").read_text()
    assert "teacher epoch 2/2" in log
    assert "teacher epoch 1/2" not in log  # the first call's epoch, not redone
    results = json.loads((out / "digits_repro_e2.json").read_text())
    assert results["complete"] and results["achieved_epochs"] == {
        "teacher": 2,
        "alone-seed0": 2,
    }
    teacher = results["teacher"]
    assert sha256(out / "digits_teacher_e2.pt") == teacher["sha256"]
    assert teacher["sha256"] in (out / "digits_teacher_e2.SOURCE.md").read_text()
    assert len(teacher["curve_test_acc"]) == 2  # both epochs in one record
    members = _members(out / "state.tar.xz")
    assert "teacher/record.json" in members and "runs/alone-seed0/record.json" in (
        members
    )
    assert "teacher/teacher.pt" not in members  # it came back beside the state
    assert not any("/ckpt/" in m for m in members)  # finished: not needed


def test_a_finished_state_is_resumed_without_training_again(sessions):
    (_, before, _), (done, out, files) = sessions[1], sessions[2]
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[reproduce]" not in (out / "reproduce.log").read_text()  # no epoch
    old, new = (
        json.loads((folder / "digits_repro_e2.json").read_text())
        for folder in (before, out)
    )
    assert new["teacher"]["sha256"] == old["teacher"]["sha256"]
    assert new["achieved_epochs"] == old["achieved_epochs"]
    assert new["runs"][0]["test_acc"] == old["runs"][0]["test_acc"]
    assert "digits_repro_e2_reliability.png" in files


def test_auto_epochs_name_the_files_by_the_plan(tmp_path, monkeypatch):
    """The script names its files by the plan, and the state carries it.

    The plan is made here from injected warm-up costs on a clock that
    stands still (2 epochs in 0.9 x 600 s, whatever this machine's speed:
    planning from real timings is tests/test_planning.py's and
    benchmarks/'), frozen in the state of a call that ran nothing more; the
    script's call then follows it, on a new machine."""
    from projkd.experiments.reproduction import command
    from projkd.experiments.reproduction.planning import PhaseCost
    from projkd.experiments.reproduction.training import Clock

    def warm_up(ctx, variants, **kwargs):  # 100 s an epoch of each network
        cost = PhaseCost(run_s=0.0, epoch_s=100.0, step_s=0.0, final_s=0.0)
        return dict(
            batches=2, teacher=cost, student=cost, graphs=None, lockstep_step_s=None
        )

    monkeypatch.setattr(command, "measure_phases", warm_up)
    monkeypatch.setattr(command, "Clock", functools.partial(Clock, timer=lambda: 0))
    monkeypatch.setattr(command, "run_all", lambda ctx, variants, seeds: ([], []))
    planned = tmp_path / "planned"
    command.reproduce(
        dataset="digits",
        subset=120,
        variants=["alone"],
        epochs="auto",
        time_budget=600,
        min_epochs=1,
        lockstep=False,
        device="cpu",
        out=planned,
    )
    carried = tmp_path / "carried"
    pack_state(planned, carried / "state.tar.xz")
    done, out, files = _machine(
        tmp_path / "machine",
        carried,
        EPOCHS="auto",
        BUDGET="600",
        EXTRA="--subset 120 --min-epochs 1",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (name,) = [f for f in files if f.endswith(".json")]
    results = json.loads((out / name).read_text())
    assert results["plan"]["epochs"] == 2 and name == "digits_repro_e2.json"
    assert results["achieved_epochs"] == {"teacher": 2, "alone-seed0": 2}
    with tarfile.open(out / "state.tar.xz") as tar:
        settings = json.load(tar.extractfile("settings.json"))
    assert settings["epochs"] == "auto" and settings["plan"] == results["plan"]
