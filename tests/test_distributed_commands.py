"""The command line's commands in two CPU processes (gloo), against one process.

Launched with several processes, ``reproduce``, ``distill`` and
``train-teacher`` train data-parallel with the recipe's batch as the global
batch, and only the main process writes. With a BatchNorm-free digits pair
(registered in the spawned processes only), two processes must give the
results of one.

- ``reproduce`` runs twice: first with a time budget that stops both
  processes after one epoch, then again to finish.
- ``distill`` distils a saved teacher.
- ``train-teacher`` trains one (its shuffled ``DataLoader`` is sharded by
  Accelerate, whose order differs from a one-process ``DataLoader``'s, so
  only the replicas are compared).
"""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("accelerate")
if not torch.distributed.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

from projkd.models import DigitsCNN  # noqa: E402

from .ddp_worker import _without_batchnorm, spawn  # noqa: E402

TEACHER, STUDENT = "digits_plain_teacher", "digits_plain_student"
VARIANTS = ["alone", "fd1"]
METRICS = ["test_acc", "train_acc", "ece", "best_test_acc"]
COMMON = dict(dataset="digits", subset=256, epochs=2, device="cpu")  # 4 x 64


def untimed(row):
    """A record without its wall-clock fields (each process times its own)."""
    return {k: v for k, v in row.items() if k not in ("train_time_s", "images_per_s")}


def reproduce_kwargs(out):
    return dict(COMMON, pair=f"{TEACHER}:{STUDENT}", variants=VARIANTS, out=str(out))


def spec(out, **fields):
    return dict(COMMON, teacher_arch=TEACHER, out=str(out), progress=False, **fields)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("commands")
    torch.manual_seed(0)
    teacher = root / "teacher.pt"
    torch.save(_without_batchnorm(DigitsCNN(8, 32)).state_dict(), teacher)
    distill = dict(
        command="distill",
        kwargs=spec(root, student_arch=STUDENT, teacher_weights=str(teacher)),
        params=dict(n_projectors=2),
    )
    parallel, single = root / "parallel", root / "single"
    spawn(
        {
            "stopped": dict(
                command="reproduce",
                kwargs=dict(reproduce_kwargs(parallel), time_budget=1e-3),
            ),
            "finished": dict(command="reproduce", kwargs=reproduce_kwargs(parallel)),
            "distill": dict(
                distill, kwargs={**distill["kwargs"], "out": str(parallel / "distill")}
            ),
            "teacher": dict(
                command="train_teacher_run", kwargs=spec(parallel / "teacher-run")
            ),
            "cli": dict(
                command="cli",
                argv=[
                    "train-teacher",
                    "--dataset=digits",
                    "--subset=256",
                    "--epochs=1",
                    f"--teacher-arch={TEACHER}",
                    f"--out={parallel / 'cli-teacher'}",
                ],
            ),
        },
        str(root),
        world_size=2,
    )
    spawn(
        {
            "single": dict(command="reproduce", kwargs=reproduce_kwargs(single)),
            "single_distill": dict(
                distill, kwargs={**distill["kwargs"], "out": str(single / "distill")}
            ),
        },
        str(root),
        world_size=1,
    )

    def load(name, ranks=2):
        return [
            torch.load(root / f"{name}-{rank}.pt", weights_only=False)
            for rank in range(ranks)
        ]

    return dict(
        parallel=parallel,
        single=single,
        stopped=load("stopped"),
        finished=load("finished"),
        reference=load("single", 1)[0],
        distill=load("distill"),
        distill_reference=load("single_distill", 1)[0],
        teacher=load("teacher"),
        cli=load("cli"),
        initial_teacher=teacher,
    )


def test_reproduce_stops_every_process_at_the_same_point_on_the_budget(runs):
    first, second = runs["stopped"]
    assert not first["complete"] and not second["complete"]
    assert first["pending"] == second["pending"]
    assert "teacher" in first["pending"]  # one teacher epoch, then out of time


def test_resumed_reproduce_equals_one_process_with_the_global_batch(runs):
    first, second = runs["finished"]
    reference = runs["reference"]
    assert first["complete"] and second["complete"] and reference["complete"]
    assert first["processes"] == 2 and reference["processes"] == 1
    expected = [reference["teacher"], *reference["runs"]]
    rows = [first["teacher"], *first["runs"]]
    assert len(rows) == len(expected) == 1 + len(VARIANTS)
    for row, other in zip(rows, [second["teacher"], *second["runs"]], strict=True):
        assert untimed(row) == untimed(other)  # every process, the same results
    for row, other in zip(rows, expected, strict=True):
        assert row["model"] == other["model"]
        for metric in METRICS:
            assert row[metric] == pytest.approx(other[metric], abs=1e-6), metric
    for name in ["teacher", *(f"runs/{v}-seed0" for v in VARIANTS)]:
        proba = np.load(runs["parallel"] / name / "test_proba.npy")
        expected = np.load(runs["single"] / name / "test_proba.npy")
        np.testing.assert_allclose(proba, expected, atol=1e-5, err_msg=name)


def test_reproduce_writes_from_the_main_process_only_and_whole(runs):
    out = runs["parallel"]
    assert not list(out.rglob("*.tmp"))
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and results["processes"] == 2
    assert (out / "results.md").read_text().startswith("#")
    for name in ["teacher", *(f"runs/{v}-seed0" for v in VARIANTS)]:
        record = json.loads((out / name / "record.json").read_text())
        assert record["epochs"] == 2, name


def test_distill_equals_one_process_and_saves_one_student(runs):
    first, second = runs["distill"]
    reference = runs["distill_reference"]
    assert first == second
    for metric in ("test_acc", "train_acc", "ece", "cka"):
        assert first[metric] == pytest.approx(reference[metric], abs=1e-6), metric
    saved = torch.load(runs["parallel"] / "distill/student.pt", weights_only=True)
    expected = torch.load(runs["single"] / "distill/student.pt", weights_only=True)
    assert saved.keys() == expected.keys()  # the bare student's names
    for key, value in expected.items():
        torch.testing.assert_close(saved[key], value, rtol=0, atol=1e-5)
    config = json.loads((runs["parallel"] / "distill/config.json").read_text())
    assert config["params"] == {"n_projectors": 2}


def test_train_teacher_trains_identical_replicas_and_saves_once(runs):
    first, second = runs["teacher"]
    assert first == second
    folder = runs["parallel"] / "teacher-run"
    saved = torch.load(folder / "teacher.pt", weights_only=True)
    initial = torch.load(runs["initial_teacher"], weights_only=True)
    assert saved.keys() == initial.keys()
    assert any(not torch.equal(saved[k], initial[k]) for k in saved)  # trained
    assert len(json.loads((folder / "history.json").read_text())) == 2


def test_the_command_line_reports_once_from_a_parallel_launch(runs):
    main, other = runs["cli"]
    assert main["rc"] == other["rc"] == 0
    assert main["stdout"].startswith("teacher: train ") and other["stdout"] == ""
