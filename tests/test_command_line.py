"""The command line never loses a run, never prints a traceback for a user's
mistake, never reports a resumed comparison without part of its runs, and
states every default (issue 29). Each mistake is run in a process of its
own, as a user meets it."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from projkd.experiments.cli import _parser
from projkd.experiments.reproduction import reproduce
from projkd.models import digits_teacher

from .conftest import one_error_line, run_cli

TINY = dict(dataset="digits", subset=60, epochs=1, device="cpu", verbose=False)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    torch.save(digits_teacher().state_dict(), path)
    return path


def test_an_output_below_a_file_is_refused_before_any_training(tmp_path, weights):
    """``--out`` (or ``--tensorboard``) below a regular file: one line, exit 2,
    before anything trained (a training would print its progress bar and
    epoch lines on stderr, and make the run folders)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    below = blocker / "runs"
    tiny = ["--dataset", "digits", "--subset", "60", "--epochs", "1"]
    cases = [
        ("distill", [*tiny, "--teacher-weights", weights, "--out", below]),
        (
            "distill",
            [*tiny, "--teacher-weights", weights, "--out", tmp_path / "d"]
            + ["--tensorboard", below],
        ),
        ("train-teacher", [*tiny, "--out", below]),
        ("reproduce", [*tiny, "--variants", "alone", "--out", below]),
        ("report", [tmp_path, "--out", below]),
    ]
    for command, args in cases:
        result = run_cli(command, *args)
        line = one_error_line(result, command, str(below), "below the file")
        assert result.stderr.strip() == line  # nothing else: nothing trained
    assert not (tmp_path / "d" / "student.pt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "d"]


def test_numbers_and_files_out_of_range_are_one_line(tmp_path):
    """Each numeric flag goes through the shared argument types; a file the
    command reads back, truncated, is named in one line."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "settings.json").write_text('{"dataset": "digits", "sub')  # cut short
    digits = ["--dataset", "digits", "--out", tmp_path / "out"]
    cases = [
        (["--epochs", "auto", "--time-budget", "inf"], ["--time-budget", "'inf'"]),
        (["--time-budget", "nan"], ["--time-budget", "finite"]),
        (["--subset", "0"], ["--subset", "positive integer"]),
        (["--subset", "-5"], ["--subset", "'-5'"]),
        (["--seeds", "0"], ["--seeds"]),
        (["--min-epochs", "0"], ["--min-epochs"]),
        (["--warmup-epochs", "-1"], ["--warmup-epochs"]),
        (["--resume-from", state], [str(state), "settings.json", "truncated"]),
        (  # the interpreter's start already spent it: refused before a warm-up
            ["--epochs", "auto", "--time-budget", "0.001"],
            ["spent before the warm-up"],
        ),
    ]
    for args, words in cases:
        one_error_line(run_cli("reproduce", *digits, *args), "reproduce", *words)
    assert not (tmp_path / "out" / "teacher").exists()
    for command, args, words in (
        ("distill", ["--feature-weight", "nan"], ["--feature-weight"]),
        ("search", ["--cv", "1"], ["--cv", "at least 2"]),
        ("search", ["--n-jobs", "0"], ["--n-jobs"]),
    ):
        result = run_cli(command, "--teacher-weights", "t.pt", *args)
        one_error_line(result, command, *words)


@pytest.fixture(scope="module")
def alone_state(tmp_path_factory):
    """The folder of a finished ``--variants alone`` call."""
    out = tmp_path_factory.mktemp("alone")
    assert reproduce(out=out, variants=["alone"], **TINY)["complete"]
    return out


def test_resuming_with_other_variants_names_the_runs_left_out(tmp_path, alone_state):
    """A state of ``--variants alone`` resumed with ``--variants kd`` would
    report kd without alone: refused, naming alone-seed0 and the flags that
    keep it, before anything trains."""
    out = tmp_path / "out"
    result = run_cli(
        "reproduce",
        *("--dataset", "digits", "--subset", "60", "--epochs", "1"),
        *("--variants", "kd", "--resume-from", alone_state, "--out", out),
    )
    one_error_line(result, "reproduce", "alone-seed0 (finished)", "--variants alone,kd")
    assert not (out / "teacher").exists() and not (out / "runs").exists()


def test_a_resumed_union_reports_every_run(tmp_path, alone_state, monkeypatch):
    from projkd.experiments.reproduction import command

    monkeypatch.setattr(command, "write_plots", lambda *args: [])
    out = tmp_path / "out"
    results = reproduce(
        out=out, variants=["alone", "kd"], resume_from=alone_state, **TINY
    )
    assert results["complete"] and set(results["summary"]) == {"alone", "kd"}
    settings = json.loads((out / "settings.json").read_text())
    assert settings["variants"] == ["alone", "kd"] and settings["seeds"] == 1
    # the same folder, asked for fewer runs than it holds: refused
    with pytest.raises(ValueError, match=r"kd-seed0 \(finished\)"):
        reproduce(out=out, variants=["alone"], **TINY)


def _options(parser: argparse.ArgumentParser):
    for action in parser._actions:  # argparse keeps no public list
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for _, option in _options(sub):
                    yield name, option
        elif action.option_strings and action.dest != "help":
            yield "projkd", action


def test_every_option_states_its_default():
    missing = []
    for command, action in _options(_parser()):
        text = action.help or ""
        if action.required:
            assert text, action.option_strings  # a help line, no default
        elif "(default:" not in text and "default: " not in text:
            missing.append(f"{command} {action.option_strings[0]}")
        elif action.default not in (None, False, [], argparse.SUPPRESS):
            shown = str(action.default)
            if isinstance(action.default, float):
                shown = f"{action.default:g}"
            if isinstance(action.default, list):
                shown = "all of them"
            if f"default: {shown}" not in text and f"({shown})" not in text:
                missing.append(f"{command} {action.option_strings[0]}: {shown}")
    assert not missing, missing


def test_mnist_defaults_to_its_own_pair():
    args = _parser().parse_args(["train-teacher", "--dataset", "mnist"])
    from projkd.experiments.cli import spec_from_args

    spec = spec_from_args(args).resolve()
    assert (spec.teacher_arch, spec.student_arch) == ("mnist_teacher", "mnist_student")
    from projkd.experiments.reproduction import DEFAULT_PAIRS

    assert DEFAULT_PAIRS["mnist"] == "mnist_teacher:mnist_student"
