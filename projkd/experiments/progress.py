"""A progress line for each phase of a command, so that none sits silent.

Training has its progress bar; what comes after it -- predictions over the
training set, CKA, calibration, timing the networks, plots, the report --
can take minutes on a busy machine. :class:`PhaseLog` prints one line on
standard error as each phase starts, with the seconds since the command
started.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["PhaseLog"]


class PhaseLog:
    """Print ``<prog> [<seconds> s]: <phase>`` as each phase starts.

    Parameters
    ----------
    prog : str
        The command, e.g. ``"projkd report"``.
    enabled : bool, default=True
        False prints nothing (``--no-progress``, or a quiet library call).
    stream : file or None, default=None
        Where the lines go (standard error by default).
    clock : callable, default=time.monotonic
        Seconds; the lines count from the log's creation.

    Examples
    --------
    >>> import io
    >>> ticks = iter([0.0, 2.5])
    >>> stream = io.StringIO()
    >>> log = PhaseLog("projkd report", stream=stream, clock=lambda: next(ticks))
    >>> log("CKA of 'p3' with the teacher")
    >>> stream.getvalue()
    "projkd report [2.5 s]: CKA of 'p3' with the teacher\\n"
    """

    def __init__(
        self,
        prog: str,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.prog = prog
        self.enabled = enabled
        self.stream = stream
        self.clock = clock
        self.start = clock()

    def __call__(self, phase: str) -> None:
        """Report that ``phase`` starts now."""
        if not self.enabled:
            return
        seconds = self.clock() - self.start
        print(
            f"{self.prog} [{seconds:.1f} s]: {phase}",
            file=sys.stderr if self.stream is None else self.stream,
            flush=True,
        )
