"""The files of a run's folder: made ready before training, read back safely.

- :func:`output_folder` makes (or checks) a folder the command will write,
  before anything trains: a place that cannot be written is one line;
- :func:`read_json` and :func:`read_array` read every file a command reads
  back (settings, records, configs, saved probabilities): one that is
  missing, truncated or not projkd's is one line naming the file;
- :func:`save_json` and :func:`write_results` write them whole or not at all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, MissingFileError

__all__ = ["output_folder", "read_array", "read_json", "save_json", "write_results"]


def output_folder(path: str | Path, flag: str = "--out") -> Path:
    """Make the folder ``path`` (and its parents) and check it can be written.

    Called for every output location before anything trains, so that a
    typo never costs a finished run.

    Parameters
    ----------
    path : str or Path
    flag : str, default="--out"
        How the message names the location (the command line's flag).

    Returns
    -------
    folder : Path

    Raises
    ------
    InputError
        If ``path`` is a file, lies below a file, or cannot be made or written
        (the message names the flag, the path and the reason).

    Examples
    --------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> output_folder(root / "runs" / "a").is_dir()
    True
    >>> (root / "file").write_text("x")
    1
    >>> try:
    ...     output_folder(root / "file" / "a")
    ... except InputError as error:
    ...     print(str(error).replace(str(root), "ROOT"))
    --out 'ROOT/file/a' lies below the file 'ROOT/file': give a folder for the \
results (it is made if needed).
    """
    folder = Path(path)
    shown = repr(str(path))
    for parent in (folder, *folder.parents):
        if parent.exists() and not parent.is_dir():
            where = f"lies below the file {str(parent)!r}"
            where = "is a file" if parent == folder else where
            raise InputError(
                f"{flag} {shown} {where}: give a folder for the results (it "
                "is made if needed)."
            )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".projkd-write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise InputError(
            f"{flag} {shown} cannot be written ({error.strerror or error}): give "
            "a folder you can write."
        ) from None
    return folder


def _unreadable(name: str, what: str, reason: str) -> InputError:
    return InputError(
        f"{what} {name} is {reason}: not whole as projkd wrote it (cut short, "
        "or edited?); restore it, or start afresh in another folder."
    )


def read_json(
    path: str | Path,
    what: str,
    *,
    keys: Sequence[str] = (),
    name: str | None = None,
) -> Any:
    """Read a JSON file projkd wrote, refusing one that is not whole or not ours.

    Parameters
    ----------
    path : str or Path
    what : str
        What the file is, for the message (``"the settings"``, ``"a run's
        record"``).
    keys : sequence of str, default=()
        Keys the file's object must hold; with any, it must be an object.
    name : str or None, default=None
        How the message names the file (default: its path), e.g. a member
        of an archive.

    Returns
    -------
    value : object

    Raises
    ------
    MissingFileError
        If there is no file at ``path``.
    InputError
        If the file is empty, truncated or not JSON, or lacks ``keys``.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "settings.json"
    >>> _ = path.write_text('{"dataset": "digits"')
    >>> try:
    ...     read_json(path, "the settings", name="settings.json")
    ... except InputError as error:
    ...     print(str(error).split(":")[0])
    the settings settings.json is truncated or not JSON (line 1, column 21)
    """
    path = Path(path)
    shown = repr(str(path)) if name is None else name
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise MissingFileError(f"{what} {shown}: no such file.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise _unreadable(shown, what, f"unreadable ({error})") from None
    if not text.strip():
        raise _unreadable(shown, what, "empty")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}"
        raise _unreadable(shown, what, f"truncated or not JSON ({where})") from None
    if keys:
        missing = [k for k in keys if not isinstance(value, dict) or k not in value]
        if missing:
            raise _unreadable(shown, what, f"without {', '.join(map(repr, missing))}")
    return value


def read_array(path: str | Path, what: str) -> np.ndarray:
    """Read a ``.npy`` array projkd wrote (no pickled objects), refusing one
    that is missing or not whole, as :func:`read_json` does."""
    path = Path(path)
    shown = repr(str(path))
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise MissingFileError(f"{what} {shown}: no such file.") from None
    except (OSError, ValueError, EOFError) as error:
        raise _unreadable(shown, what, f"unreadable ({error})") from None


def save_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON (numpy values as plain numbers).

    The folder is made if needed, and the file is written whole or not at all
    (a temporary file beside it, then renamed): a done marker or a results
    file is never read half-written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=_jsonable) + "\n")
    tmp.replace(path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_results(out: Path, records: list[dict[str, Any]], markdown: str) -> None:
    """Save a run's results as JSON and as a markdown table."""
    save_json(out / "results.json", records)
    (out / "results.md").write_text(markdown + "\n")
