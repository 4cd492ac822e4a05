"""The state a later session resumes from: ``pack_state`` and ``--resume-from``."""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import pytest

from projkd import InputError, ProjectorDistiller
from projkd.experiments.cli import main
from projkd.experiments.reproduction import command, reproduce
from projkd.experiments.reproduction.state import (
    merge_state,
    pack_state,
    unpacked_state,
)
from projkd.teacher import TeacherNet

TINY = dict(dataset="digits", epochs=1, subset=100, variants=["alone"], device="cpu")
ARGV = [
    "reproduce",
    "--dataset",
    "digits",
    "--epochs",
    "1",
    "--subset",
    "100",
    "--variants",
    "alone",
    "--device",
    "cpu",
    "--quiet",
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run folder and its results."""
    out = tmp_path_factory.mktemp("finished")
    return out, reproduce(out=out, **TINY)


@pytest.fixture
def no_training(monkeypatch):
    def fail(*args, **kwargs):
        pytest.fail("a finished run was trained again")

    monkeypatch.setattr(TeacherNet, "fit", fail)
    monkeypatch.setattr(ProjectorDistiller, "fit", fail)


def _names(archive):
    with tarfile.open(archive) as tar:
        return sorted(tar.getnames())


def test_the_state_holds_what_resumes_and_not_what_is_remade(finished, tmp_path):
    out, _ = finished
    packed = pack_state(out, tmp_path / "state.tar.xz")
    assert packed["files"] == ["state.tar.xz"] and packed["left_out"] == []
    assert _names(tmp_path / "state.tar.xz") == [
        "runs/alone-seed0/record.json",
        "runs/alone-seed0/test_proba.npy",
        "settings.json",
        "teacher/record.json",
        "teacher/teacher.pt",
        "teacher/test_proba.npy",
    ]  # no checkpoint of a finished run, no results file or plot
    pack_state(out, tmp_path / "state.tar.xz", teacher_weights=False)
    assert "teacher/teacher.pt" not in _names(tmp_path / "state.tar.xz")


def test_a_state_too_big_for_one_file_is_split_then_thinned(finished, tmp_path):
    out, _ = finished
    packed = pack_state(out, tmp_path / "state.tar.xz", part_size=50_000, max_parts=99)
    assert len(packed["files"]) > 1 and packed["files"][0] == "state.tar.xz.0"
    assert not (tmp_path / "state.tar.xz").exists()
    with unpacked_state(tmp_path / "state.tar.xz.0", tmp_path) as state:
        for name in ("teacher/teacher.pt", "runs/alone-seed0/record.json"):
            assert (state / name).read_bytes() == (out / name).read_bytes()
    packed = pack_state(out, tmp_path / "state.tar.xz", part_size=50_000, max_parts=1)
    assert packed["left_out"] == [
        "teacher/test_proba.npy",
        "runs/alone-seed0/test_proba.npy",
    ]
    assert len(packed["files"]) > 1  # what a later call needs is never left out


def test_a_new_folder_resumes_from_the_state_and_the_teacher_beside_it(
    finished, tmp_path, no_training, capsys
):
    out, results = finished
    back = tmp_path / "back"  # what came back: the state, the teacher's .pt
    pack_state(out, back / "state.tar.xz", teacher_weights=False)
    shutil.copyfile(out / "teacher" / "teacher.pt", back / "wrn_like_e1.pt")
    new = tmp_path / "new"
    assert main([*ARGV, "--out", str(new), "--resume-from", str(back)]) == 0
    resumed = json.loads((new / "results.json").read_text())
    assert resumed["complete"]
    assert resumed["teacher"]["sha256"] == results["teacher"]["sha256"]
    assert resumed["runs"][0]["test_acc"] == results["runs"][0]["test_acc"]
    assert resumed["achieved_epochs"] == results["achieved_epochs"]
    assert not list(new.glob(".resume-*"))  # the scratch folder is gone


def test_a_given_teacher_is_found_where_the_later_call_names_it(
    finished, tmp_path, request
):
    out, results = finished
    weights = tmp_path / "given.pt"
    shutil.copyfile(out / "teacher" / "teacher.pt", weights)
    first = tmp_path / "first"
    argv = [*ARGV, "--teacher-weights"]
    assert main([*argv, str(weights), "--out", str(first)]) == 0
    pack_state(first, tmp_path / "state.tar.xz")
    request.getfixturevalue("no_training")
    moved = tmp_path / "elsewhere" / "given.pt"  # the later machine's path
    moved.parent.mkdir()
    weights.rename(moved)
    new = tmp_path / "new"
    resume = ["--resume-from", str(tmp_path / "state.tar.xz")]
    assert main([*argv, str(moved), "--out", str(new), *resume]) == 0
    resumed = json.loads((new / "results.json").read_text())
    assert resumed["teacher"]["sha256"] == results["teacher"]["sha256"]


def test_a_teacher_neither_in_the_state_nor_beside_it_is_refused(
    finished, tmp_path, capsys
):
    out, _ = finished
    pack_state(out, tmp_path / "back" / "state.tar.xz", teacher_weights=False)
    new = tmp_path / "new"
    with pytest.raises(SystemExit) as stop:
        main([*ARGV, "--out", str(new), "--resume-from", str(tmp_path / "back")])
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("projkd reproduce: error: --resume-from")
    assert "teacher's weights" in line and not (new / "teacher").exists()


def _archive(path, members):
    """A tar.xz of ``members``: name -> bytes, or ("link", target)."""
    with tarfile.open(path, "w:xz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(data, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, data[1]
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    "member",
    [{"../x": b"x"}, {"teacher/../../x": b"x"}, {"link": ("link", "../x")}],
    ids=["parent", "inner-parent", "link-out"],
)
def test_an_unsafe_archive_is_refused_in_one_line(tmp_path, capsys, member):
    archive = _archive(tmp_path / "state.tar.xz", {"settings.json": b"{}", **member})
    new = tmp_path / "runs" / "new"
    with pytest.raises(SystemExit) as stop:
        main([*ARGV, "--out", str(new), "--resume-from", str(archive)])
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("projkd reproduce: error: --resume-from")
    assert "unsafe archive" in line
    assert not (tmp_path / "runs" / "x").exists() and not (new / "teacher").exists()


def test_a_broken_archive_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "state.tar.xz").write_bytes(b"\xfd7zXZ\x00 not really")
    with pytest.raises(SystemExit):
        main([*ARGV, "--out", str(tmp_path / "new"), "--resume-from", str(tmp_path)])
    (line,) = capsys.readouterr().err.splitlines()
    assert "not a readable state archive" in line


def test_a_state_of_other_settings_is_refused(finished, tmp_path):
    out, _ = finished
    pack_state(out, tmp_path / "state.tar.xz")
    new = tmp_path / "new"
    with pytest.raises(InputError, match="epochs: 1 there, 2 now"):
        reproduce(
            out=new, resume_from=tmp_path / "state.tar.xz", **{**TINY, "epochs": 2}
        )
    assert not (new / "teacher").exists() and not (new / "settings.json").exists()
    # an out folder of other settings is refused before the state lands in it
    (new / "settings.json").write_text(json.dumps({"dataset": "digits", "epochs": 2}))
    with pytest.raises(InputError, match=f"{new} holds runs made with other"):
        reproduce(out=new, resume_from=tmp_path / "state.tar.xz", **TINY)
    assert not (new / "teacher").exists()


def test_a_run_folder_is_a_state_too(finished, tmp_path, no_training, monkeypatch):
    monkeypatch.setattr(command, "write_plots", lambda *args: [])
    out, results = finished
    new = tmp_path / "new"
    resumed = reproduce(out=new, resume_from=out, **TINY)
    assert resumed["complete"]
    assert resumed["teacher"]["sha256"] == results["teacher"]["sha256"]
    assert reproduce(out=new, resume_from=new, **TINY)["complete"]  # itself


def test_merge_keeps_a_run_that_is_further_in_out(tmp_path):
    state, out = tmp_path / "state", tmp_path / "out"
    for folder in (state, out):
        (folder / "settings.json").parent.mkdir(parents=True)
        (folder / "settings.json").write_text("{}")
    history = state / "runs" / "kd-seed0" / "ckpt" / "k" / "history.json"
    history.parent.mkdir(parents=True)
    history.write_text(json.dumps([{"epoch": 1}]))
    (out / "runs" / "kd-seed0").mkdir(parents=True)
    (out / "runs" / "kd-seed0" / "record.json").write_text("{}")  # done here
    theirs = state / "runs" / "fd1-seed0" / "record.json"
    theirs.parent.mkdir(parents=True)
    theirs.write_text("{}")
    assert merge_state(state, out) == ["runs/fd1-seed0"]
    assert (out / "runs" / "kd-seed0" / "record.json").exists()
    assert not (out / "runs" / "kd-seed0" / "ckpt").exists()


def test_a_frozen_auto_plan_is_resumed_not_planned_again(tmp_path, monkeypatch):
    plan = {"epochs": 1, "lockstep": False}  # what command.py reads of a plan
    monkeypatch.setattr(command, "format_results", lambda results: "table")
    monkeypatch.setattr(command, "write_plots", lambda *args: [])
    monkeypatch.setattr(command, "_plan", lambda *args: dict(plan))
    auto = {**TINY, "epochs": "auto", "min_epochs": 1}
    first = tmp_path / "first"
    stopped = reproduce(out=first, time_budget=1e-6, **auto)
    assert not stopped["complete"]
    pack_state(first, tmp_path / "state.tar.xz")
    monkeypatch.setattr(
        command, "_plan", lambda *args: pytest.fail("planned a second time")
    )
    resumed = reproduce(
        out=tmp_path / "new",
        resume_from=tmp_path / "state.tar.xz",
        time_budget=600,
        **auto,
    )
    assert resumed["complete"] and resumed["plan"] == plan
    assert resumed["achieved_epochs"] == {"teacher": 1, "alone-seed0": 1}
