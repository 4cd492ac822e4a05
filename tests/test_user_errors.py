"""Every mistake a user can make gets one clear line (issue 21)."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from projkd import ProjectorDistiller, UserError
from projkd.analysis import compare
from projkd.models import (
    UnsafeWeightsError,
    WeightsFileError,
    digits_teacher,
    read_state_dict,
)

from .conftest import FAST, one_error_line, run_cli


@pytest.fixture
def files(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(digits_teacher().state_dict(), good)
    data = good.read_bytes()
    made = {"good": good}
    for name, content in {
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "html": b"<!DOCTYPE html><html><body>404 Not Found</body></html>",
        "random": b"\x13" + np.random.default_rng(0).bytes(500),
    }.items():
        made[name] = tmp_path / f"{name}.pth"
        made[name].write_bytes(content)
    return made


class _Code:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("kind", ["empty", "truncated", "html", "random"])
def test_broken_weight_files_are_named_as_broken(files, kind):
    with pytest.raises(WeightsFileError) as info:
        read_state_dict(files[kind])
    message = str(info.value)
    assert str(files[kind]) in message and "weights_only=False" not in message
    assert {"empty": "empty", "truncated": "truncated", "html": "HTML"}.get(
        kind, "not a PyTorch checkpoint"
    ) in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, UserError)


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "code.pth"
    torch.save({"model": _Code(marker)}, path)
    with pytest.raises(UnsafeWeightsError) as info:
        read_state_dict(path)
    assert isinstance(info.value, pickle.UnpicklingError)
    assert str(path) in str(info.value) and "weights_only=False" not in str(info.value)
    assert not marker.exists()


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        read_state_dict(tmp_path / "nothing.pt")


def test_each_command_reports_a_mistake_in_one_line(files, tmp_path):
    empty = tmp_path / "EMPTY"
    empty.mkdir()
    cases = [
        ("demo", ["--out", str(files["good"])], ["is a file"]),
        (
            "train-teacher",
            ["--dataset", "cifar100", "--data-root", str(empty)],
            [str(empty), "npy.xz", "--download"],
        ),
        (
            "distill",
            ["--teacher-weights", str(files["html"])],
            [str(files["html"]), "HTML"],
        ),
        (
            "search",
            ["--teacher-weights", str(files["good"]), "--param", "lr"],
            ["--param 'lr'", "NAME=V1,V2"],
        ),
        ("report", [str(tmp_path / "no-run")], ["no-run"]),
        (
            "reproduce",
            ["--dataset", "digits", "--teacher-weights", str(files["truncated"])],
            ["truncated"],
        ),
        (  # planned before training: the warm-up runs, then the refusal
            "reproduce",
            ["--dataset", "digits", "--subset", "200", "--variants", "alone"]
            + ["--epochs", "auto", "--time-budget", "600", "--min-epochs", "100000"]
            + ["--out", str(tmp_path / "auto")],
            ["--min-epochs 100000", "--time-budget"],
        ),
    ]
    for command, args, words in cases:
        one_error_line(run_cli(command, *args), command, *words)
    assert not (tmp_path / "auto" / "teacher").exists()  # nothing trained
    # with --traceback (or PROJKD_TRACEBACK=1) the traceback shows
    shown = run_cli("distill", "--teacher-weights", str(files["html"]), "--traceback")
    assert "Traceback" in shown.stderr and "WeightsFileError" in shown.stderr
    shown = run_cli("report", str(tmp_path / "no-run"), env={"PROJKD_TRACEBACK": "1"})
    assert "Traceback" in shown.stderr


@pytest.mark.parametrize("command", ["distill", "train-teacher", "search"])
def test_epochs_zero_is_refused(command, files):
    result = run_cli(command, "--epochs", "0", "--teacher-weights", str(files["good"]))
    one_error_line(result, command, "--epochs", "positive integer")
    assert "usage:" in result.stderr  # argparse's own error keeps its usage line


def test_only_the_main_process_reports_a_bad_command_line(files):
    env = {"RANK": "1", "WORLD_SIZE": "2"}
    result = run_cli("distill", "--teacher-weights", str(files["html"]), env=env)
    assert result.returncode == 2 and result.stderr == ""
    result = run_cli("distill", "--epochs", "0", "--teacher-weights", "x", env=env)
    assert result.returncode == 2 and result.stderr == ""


def test_a_bug_keeps_its_traceback(tmp_path):
    from projkd.experiments.errors import error_boundary

    with pytest.raises(ValueError, match="deep inside"):
        with error_boundary("projkd distill"):
            raise ValueError("deep inside torch")


def test_bad_compile_mode_is_refused_before_training(small_digits, teacher):
    X, y = small_digits
    est = ProjectorDistiller(
        teacher,
        student=digits_teacher,
        compile=True,
        compile__mode="no-such-mode",
        **FAST,
    )
    with pytest.raises(ValueError, match="no-such-mode") as info:
        est.fit(X, y)
    assert "max-autotune" in str(info.value)  # torch's own list of modes
    assert not hasattr(est, "module_")


def test_predict_on_nan_says_predict(small_digits, teacher):
    X, y = small_digits
    est = ProjectorDistiller(teacher, student=digits_teacher, **FAST).fit(X, y)
    bad = X.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="before predict"):
        est.predict(bad)
    assert not np.isnan(X).any()


def test_compare_names_an_unfitted_entry(small_digits, teacher):
    X, y = small_digits
    base = ProjectorDistiller(teacher, student=digits_teacher, **FAST)
    with pytest.raises(NotFittedError, match="'base'.*best_estimator_"):
        compare({"base": base}, X, y, X, y)
