import json
import subprocess
import sys

import pytest

from projkd.experiments.cli import main
from projkd.experiments.demo import VARIANTS

pytest.importorskip("matplotlib")


def _phases(err: str, command: str) -> list[str]:
    """The progress lines of ``command`` on stderr, without their times."""
    prefix = f"projkd {command} ["
    return [line.split("]: ", 1)[1] for line in err.splitlines() if prefix in line]


def test_demo_prints_every_model_and_writes_plots(capsys, tmp_path):
    assert main(["demo", "--epochs", "1", "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "| model | train acc % | test acc % | gap % | ECE % |" in out
    for name in ["teacher", *VARIANTS]:
        assert f"| {name} |" in out
    for png in ("reliability.png", "cka_3_projectors.png", "cka_no_projector.png"):
        assert (tmp_path / png).stat().st_size > 2000
    # after the progress bar, a line for each phase: none sits silent
    phases = _phases(err, "demo")
    assert phases[0].startswith("reliability diagrams")
    assert (
        sum(p.startswith("CKA with the teacher, layer by layer") for p in phases) == 2
    )
    for name in ["teacher", *VARIANTS]:
        assert f"{name}: accuracy and calibration (train and test sets)" in phases
    for name in VARIANTS:
        assert f"{name}: CKA with the teacher (test set)" in phases
    assert phases[-1].startswith("cost: parameters, MACs and latency of 6 networks")


def test_teacher_distill_search_report_pipeline(tmp_path, capsys):
    teacher_dir, student_dir = tmp_path / "teacher", tmp_path / "student"
    common = [
        "--dataset",
        "digits",
        "--epochs",
        "2",
        "--subset",
        "300",
        "--no-progress",
    ]
    assert main(["train-teacher", *common, "--out", str(teacher_dir)]) == 0
    weights = teacher_dir / "teacher.pt"
    assert weights.exists()
    assert (
        main(
            [
                "distill",
                *common,
                "--teacher-weights",
                str(weights),
                "--n-projectors",
                "2",
                "--out",
                str(student_dir),
            ]
        )
        == 0
    )
    results = json.loads((student_dir / "results.json").read_text())
    assert results[1]["model"] == "digits_student" and 0 <= results[1]["ece"] <= 1
    assert (
        main(
            [
                "search",
                *common,
                "--teacher-weights",
                str(weights),
                "--cv",
                "2",
                "--n-projectors",
                "1,2",
                "--param",
                "feature_weight=1.0,25.0",
                "--out",
                str(tmp_path / "search"),
            ]
        )
        == 0
    )
    rows = json.loads((tmp_path / "search" / "results.json").read_text())
    assert len(rows) == 4 and {"mean_accuracy", "mean_cka"} <= set(rows[0])
    capsys.readouterr()
    assert main(["report", str(student_dir), "--out", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr()
    phases = _phases(printed.err, "report")
    assert phases == [
        f"loading the student of {str(student_dir)!r} and its data",
        "teacher: accuracy and calibration (train and test sets)",
        "student: accuracy and calibration (train and test sets)",
        "student: CKA with the teacher (test set)",
        "cost: parameters, MACs and latency of 2 networks (20 interleaved rounds "
        "at batch 1)",
        "reliability diagrams (test set) and accuracy curves",
        "student: CKA with the teacher, layer by layer (540 images)",
        f"done: {tmp_path / 'report' / 'results.md'} and the plots",
    ]
    report = json.loads((tmp_path / "report" / "results.json").read_text())
    # the reloaded student scores exactly as the saved one did
    assert report[1]["test_acc"] == pytest.approx(results[1]["test_acc"])
    for png in ("reliability.png", "accuracy.png", "cka_student.png"):
        assert (tmp_path / "report" / png).exists()
    assert "| student |" in printed.out


def test_module_entry_point_shows_help():
    result = subprocess.run(
        [sys.executable, "-m", "projkd", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    for command in ("demo", "train-teacher", "distill", "search", "report"):
        assert command in result.stdout
