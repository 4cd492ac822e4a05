"""The command line's error boundary: a user's mistake in one line, a bug in full.

A *user error* is one the user can fix from its message:

- any :class:`projkd.UserError` (projkd's own checks raise them: parameter and
  data validation, unreadable weight files, a data set that is not where
  ``--data-root`` says, a ``search --param`` that does not parse);
- a ``FileNotFoundError`` for a path the user gave (the file, or one inside
  the folder, named on the command line).

It is printed as ``projkd <command>: error: <message>`` on one line of
standard error, without a traceback, and the command exits with status 2
(``argparse``'s convention). Anything else, a ``ValueError`` from deep inside
torch included, is a bug and keeps its traceback. ``--traceback`` (or
``PROJKD_TRACEBACK=1``) shows the traceback of any error.

Under ``torchrun`` or ``accelerate launch`` every process runs the same
command: a mistake in the command line itself (found before anything runs)
fails every process alike, so only the main process prints it; a mistake
found while the command runs is printed by the process that failed, which
names its rank. Every failing process exits non-zero, and the launcher tears
the others down.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

from ..errors import UserError
from ..parallel.process import process_index

__all__ = ["EXIT_USER_ERROR", "error_boundary", "is_user_error", "user_message"]

#: The exit status of a user error (``argparse``'s for a bad command line).
EXIT_USER_ERROR = 2


def _within(name: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    path, root = Path(name).absolute(), Path(folder).absolute()
    return path == root or root in path.parents


def is_user_error(error: BaseException, paths: Iterable[str] = ()) -> bool:
    """Whether ``error`` is the user's to fix (see the module's docstring).

    Parameters
    ----------
    error : BaseException
    paths : iterable of str, default=()
        The files and folders the user named; a ``FileNotFoundError`` counts
        when its file is one of them or inside one of them.

    Examples
    --------
    >>> from projkd import InputError
    >>> is_user_error(InputError("epochs must be >= 1"))
    True
    >>> is_user_error(FileNotFoundError(2, "No such file", "runs/t/teacher.pt"),
    ...               paths=["runs/t"])
    True
    >>> is_user_error(ValueError("from inside torch"))
    False
    """
    if isinstance(error, UserError):
        return True
    if isinstance(error, FileNotFoundError) and error.filename is not None:
        return any(_within(error.filename, path) for path in paths if path)
    return False


def user_message(error: BaseException) -> str:
    """The error's message on one line (a ``FileNotFoundError`` of ``open``
    reads ``no such file or directory: '<path>'``)."""
    if isinstance(error, FileNotFoundError) and not isinstance(error, UserError):
        if error.filename is not None:
            return f"no such file or directory: {str(error.filename)!r}"
    text = str(error) or type(error).__name__
    return " ".join(text.split())


def wants_traceback(flag: bool = False) -> bool:
    """``--traceback`` given, or ``PROJKD_TRACEBACK`` set to anything but
    ``""``/``"0"``."""
    return flag or os.environ.get("PROJKD_TRACEBACK", "") not in ("", "0")


@contextlib.contextmanager
def error_boundary(
    prog: str,
    *,
    paths: Iterable[str] = (),
    show_traceback: bool = False,
    alike: bool = False,
    stream: TextIO | None = None,
) -> Iterator[None]:
    """Report a user error raised inside the block in one line and exit 2.

    Parameters
    ----------
    prog : str
        The command, e.g. ``"projkd distill"``.
    paths : iterable of str, default=()
        The files and folders named on the command line.
    show_traceback : bool, default=False
        Let every error through with its traceback (``--traceback``).
    alike : bool, default=False
        The block checks the command line itself, which fails every process
        of a parallel launch alike: only the main process prints.
    stream : file or None, default=None
        Where the line goes (standard error by default).

    Raises
    ------
    SystemExit
        With status 2, for a user error (the line printed).
    """
    paths = list(paths)
    try:
        yield
    except Exception as error:
        if wants_traceback(show_traceback) or not is_user_error(error, paths):
            raise
        rank = process_index()
        if not alike or rank == 0:
            where = f" (rank {rank})" if rank and not alike else ""
            print(
                f"{prog}: error{where}: {user_message(error)}",
                file=sys.stderr if stream is None else stream,
            )
        raise SystemExit(EXIT_USER_ERROR) from None
