"""The resumable state of ``projkd reproduce`` as one archive, for a later session.

A lent machine's run folder is gone after its session; what comes back is a
few files of at most 16 MiB each. :func:`pack_state` writes what a later
call needs to continue into ``state.tar.xz`` (split into parts when it does
not fit one): ``settings.json`` (with a frozen ``--epochs auto`` plan), each
finished run's ``record.json`` and ``test_proba.npy``, each unfinished run's
checkpoint folder, and the trained teacher's weights. The results files and
plots are left out (every call writes them anew), and so are finished runs'
checkpoints. :func:`unpacked_state` reads such an archive (or its parts, or
an unpacked run folder) safely into a temporary folder, and
:func:`merge_state` moves its runs into an output folder.

Layout of the archive (paths relative to the run folder)::

    settings.json
    teacher/record.json, teacher/test_proba.npy, teacher/teacher.pt   (done)
    teacher/ckpt/<key>/...                                            (not done)
    runs/<variant>-seed<s>/record.json, test_proba.npy                (done)
    runs/<variant>-seed<s>/ckpt/<key>/...                             (not done)
"""

from __future__ import annotations

import contextlib
import lzma
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...errors import InputError
from ..io import read_json
from .training import sha256

__all__ = [
    "PART_SIZE",
    "STATE_NAME",
    "merge_state",
    "pack_state",
    "unpacked_state",
]

#: The archive's file name (its parts: ``state.tar.xz.0``, ``.1``, ...).
STATE_NAME = "state.tar.xz"
#: The largest file a lent machine brings back.
PART_SIZE = 16 * 2**20


# ------------------------------------------------------------------- pack
def _units(out: Path) -> list[Path]:
    """The teacher's folder and every run's folder under ``out``."""
    runs = out / "runs"
    found = sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
    return [out / "teacher", *found]


def _members(out: Path, teacher_weights: bool) -> tuple[list[Path], list[Path]]:
    """The files to pack: those a later call needs, and the optional ones
    (test probabilities: only the reliability plot reads them)."""
    needed, optional = [out / "settings.json"], []
    for unit in _units(out):
        record = unit / "record.json"
        if record.is_file():
            needed.append(record)
            optional.append(unit / "test_proba.npy")
            saved = _read(record, out).get("weights")
            if teacher_weights and saved == "teacher/teacher.pt":
                needed.append(out / saved)
        elif (unit / "ckpt").is_dir():
            # a temporary file (".name.<id>.tmp") is a save that never finished
            needed += sorted(
                p
                for p in (unit / "ckpt").rglob("*")
                if p.is_file() and not p.name.startswith(".")
            )
    return needed, [p for p in optional if p.is_file()]


def _write(archive: Path, out: Path, files: list[Path]) -> int:
    """Write ``files`` (under ``out``) as an xz-compressed tar; its size."""
    with tarfile.open(archive, "w:xz") as tar:
        for path in files:
            tar.add(path, arcname=path.relative_to(out).as_posix(), recursive=False)
    return archive.stat().st_size


def _split(archive: Path, part_size: int) -> list[Path]:
    """Cut ``archive`` into ``archive.0``, ``archive.1``, ... of at most
    ``part_size`` bytes each (the archive itself is removed)."""
    parts = []
    with open(archive, "rb") as f:
        for index, block in enumerate(iter(lambda: f.read(part_size), b"")):
            part = archive.with_name(f"{archive.name}.{index}")
            part.write_bytes(block)
            parts.append(part)
    archive.unlink()
    return parts


def pack_state(
    out: str | Path,
    archive: str | Path,
    *,
    teacher_weights: bool = True,
    part_size: int = PART_SIZE,
    max_parts: int = 1,
) -> dict[str, Any]:
    """Pack the resumable state of the run folder ``out`` into ``archive``.

    Parameters
    ----------
    out : str or Path
        A ``projkd reproduce`` output folder (it holds ``settings.json``).
    archive : str or Path
        The file to write, e.g. ``$OUT/state.tar.xz``; parts of an earlier
        archive of that name are removed first.
    teacher_weights : bool, default=True
        Pack the trained teacher's ``teacher.pt``. ``False`` when it comes
        back as a file of its own: a later call finds it beside the archive
        by its sha256.
    part_size : int, default=PART_SIZE
        A larger archive is split into parts of this many bytes.
    max_parts : int, default=1
        When the archive needs more parts, it is written again without the
        test probabilities (the later call's reliability plot then lacks
        those runs; their figures stay in the tables).

    Returns
    -------
    packed : dict
        ``files`` (the names written), ``size`` (bytes in all) and
        ``left_out`` (the optional files left out, relative to ``out``).

    Examples
    --------
    >>> from projkd.experiments.reproduction.state import pack_state
    >>> # pack_state("runs/repro", "out/state.tar.xz", teacher_weights=False)
    """
    out, archive = Path(out), Path(archive)
    if not (out / "settings.json").is_file():
        raise InputError(
            f"{out} holds no settings.json: it is not a projkd reproduce output "
            "folder, or nothing has run in it yet."
        )
    for old in [archive, *archive.parent.glob(f"{archive.name}.*")]:
        old.unlink(missing_ok=True)
    archive.parent.mkdir(parents=True, exist_ok=True)
    needed, optional = _members(out, teacher_weights)
    left_out: list[Path] = []
    size = _write(archive, out, needed + optional)
    if size > part_size * max_parts and optional:
        left_out = optional
        size = _write(archive, out, needed)
    files = [archive] if size <= part_size else _split(archive, part_size)
    return {
        "files": [p.name for p in files],
        "size": size,
        "left_out": [p.relative_to(out).as_posix() for p in left_out],
    }


# ---------------------------------------------------------------- restore
def _archive_parts(source: Path) -> list[Path]:
    """The files of the archive ``source`` names (a file, or a folder that
    holds ``state.tar.xz`` or its parts)."""
    if source.is_dir():
        whole = source / STATE_NAME
        first = source / f"{STATE_NAME}.0"
        if not whole.is_file() and not first.is_file():
            raise InputError(
                f"--resume-from {str(source)!r} holds neither {STATE_NAME} (or "
                "its parts .0, .1, ...) nor a run folder's settings.json."
            )
        source = whole if whole.is_file() else first
    if not source.name.endswith(".0"):
        return [source]
    stem = source.name[:-2]
    parts: list[Path] = []
    while (source.with_name(f"{stem}.{len(parts)}")).is_file():
        parts.append(source.with_name(f"{stem}.{len(parts)}"))
    return parts


def _extract(parts: list[Path], folder: Path, shown: str) -> None:
    """Extract the archive of ``parts`` into ``folder``, refusing any member
    that would land outside it, a link out of it, or a special file."""
    if not hasattr(tarfile, "data_filter"):  # Python < 3.11.4 / 3.12
        raise InputError(
            "--resume-from needs tarfile's safe extraction (Python 3.11.4 or "
            "newer, or 3.12): unpack the archive yourself and give the folder."
        )
    whole = parts[0]
    if len(parts) > 1:
        whole = folder / ".joined.tar.xz"
        with open(whole, "wb") as joined:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, joined)
    target = folder / "state"
    try:
        with tarfile.open(whole, "r:*") as tar:
            tar.extractall(target, filter="data")
    except tarfile.FilterError as error:
        raise InputError(
            f"--resume-from {shown}: refusing an unsafe archive ({error})."
        ) from None
    except (tarfile.TarError, lzma.LZMAError, EOFError, OSError) as error:
        raise InputError(
            f"--resume-from {shown} is not a readable state archive "
            f"({type(error).__name__}: {error})."
        ) from None
    finally:
        if whole != parts[0]:
            whole.unlink()


def _find_teacher(state: Path, beside: Path, shown: str) -> None:
    """Put the trained teacher's weights into ``state`` when the archive
    left them out: a ``.pt`` file beside it with the recorded sha256."""
    record_path = state / "teacher" / "record.json"
    if not record_path.is_file():
        return
    record = _read(record_path, state, shown)
    if record.get("weights") != "teacher/teacher.pt":
        return  # a given teacher: the call names it with --teacher-weights
    weights = state / "teacher" / "teacher.pt"
    if weights.is_file():
        return
    for candidate in sorted(beside.glob("*.pt")):
        if sha256(candidate) == record.get("sha256"):
            shutil.copyfile(candidate, weights)
            return
    raise InputError(
        f"--resume-from {shown}: the trained teacher's weights (sha256 "
        f"{str(record.get('sha256'))[:12]}...) are neither in the state nor a .pt "
        f"file in {str(beside)!r}; put the teacher's .pt that came back with the "
        "state beside it."
    )


@contextlib.contextmanager
def unpacked_state(source: str | Path, scratch: str | Path) -> Iterator[Path]:
    """The state of an earlier session, unpacked into a temporary folder.

    Parameters
    ----------
    source : str or Path
        A ``state.tar.xz`` written by :func:`pack_state` (or its first part,
        ``state.tar.xz.0``), a folder that holds it, or an unpacked run
        folder (it holds ``settings.json``). A trained teacher left out of
        the archive is taken from a ``.pt`` file beside it whose sha256 the
        teacher's record names.
    scratch : str or Path
        Where the temporary folder is made (the output folder: moving from
        it is a rename); it is removed when the block ends.

    Yields
    ------
    state : Path
        A run folder: ``settings.json``, ``teacher/``, ``runs/``.

    Raises
    ------
    InputError
        For a missing source, an unreadable or unsafe archive (a member
        outside the folder, a link out of it, a device file), a state without
        ``settings.json``, or a teacher's weights that cannot be found.
    """
    source = Path(source)
    shown = repr(str(source))
    if not source.exists():
        raise InputError(f"--resume-from {shown}: no such file or folder.")
    with tempfile.TemporaryDirectory(dir=scratch, prefix=".resume-") as tmp:
        if source.is_dir() and (source / "settings.json").is_file():
            state = Path(tmp) / "state"
            shutil.copytree(
                source, state, symlinks=True, ignore=shutil.ignore_patterns(".*")
            )
        else:
            parts = _archive_parts(source)
            _extract(parts, Path(tmp), shown)
            state = Path(tmp) / "state"
            if not (state / "settings.json").is_file():
                raise InputError(
                    f"--resume-from {shown} holds no settings.json: not a state "
                    "written by projkd reproduce (benchmarks/gpu_session.sh)."
                )
            _find_teacher(state, parts[0].parent, shown)
        yield state


# ------------------------------------------------------------------ merge
def _read(path: Path, root: Path, where: str | None = None) -> Any:
    """A JSON file of a run folder or state, named by its place in it."""
    name = path.relative_to(root).as_posix()
    name = repr(str(path)) if where is None else f"{name} in {where}"
    return read_json(path, "the file", name=name)


def _progress(unit: Path, root: Path) -> tuple[int, int]:
    """How far a run's folder is: (finished, epochs in its checkpoint)."""
    if not unit.is_dir():
        return (-1, -1)
    epochs = [len(_read(history, root)) for history in unit.glob("ckpt/*/history.json")]
    return (int((unit / "record.json").is_file()), max(epochs, default=0))


def _finished_teacher(out: Path) -> str | None:
    path = out / "teacher" / "record.json"
    return _read(path, out).get("sha256") if path.is_file() else None


def merge_state(state: str | Path, out: str | Path) -> list[str]:
    """Move the runs of an unpacked ``state`` into the output folder ``out``.

    A run is taken from the state when it is further there than in ``out``
    (finished, or more epochs checkpointed); a run as far or further in
    ``out`` is kept. The settings are the caller's to check first (both
    folders against the call's); ``--epochs auto`` plans and finished
    teachers must agree.

    Parameters
    ----------
    state : str or Path
        An unpacked state (:func:`unpacked_state`); its folders are moved.
    out : str or Path
        The output folder.

    Returns
    -------
    restored : list of str
        The runs taken from the state (``"teacher"``, ``"runs/kd-seed0"``, ...).
    """
    state, out = Path(state), Path(out)
    saved = _read(state / "settings.json", state)
    here_path = out / "settings.json"
    here = _read(here_path, out) if here_path.is_file() else {}
    if here.get("plan") and saved.get("plan") and here["plan"] != saved["plan"]:
        raise InputError(
            f"{out} holds runs of another --epochs auto plan "
            f"({here['plan'].get('epochs')} epochs there, "
            f"{saved['plan'].get('epochs')} in the state); choose another out folder."
        )
    theirs, ours = _finished_teacher(state), _finished_teacher(out)
    if theirs and ours and theirs != ours:
        raise InputError(
            f"{out} holds another trained teacher (sha256 {ours[:12]}... there, "
            f"{theirs[:12]}... in the state); choose another out folder."
        )
    restored = []
    for unit in _units(state):
        name = unit.relative_to(state).as_posix()
        if unit.is_dir() and _progress(unit, state) > _progress(out / name, out):
            shutil.rmtree(out / name, ignore_errors=True)
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(unit), str(out / name))
            restored.append(name)
    if "plan" in saved or not here:
        shutil.copyfile(state / "settings.json", here_path)
    return restored
