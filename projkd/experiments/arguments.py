"""Argument types the ``projkd`` commands share (for ``argparse``'s ``type=``).

A value that does not fit is refused by ``argparse`` itself: the command's
usage line, then ``projkd <command>: error: argument --epochs: ...``, exit 2.
"""

from __future__ import annotations

import argparse

__all__ = ["positive_int"]


def positive_int(text: str) -> int:
    """An integer of at least 1 (``--epochs``, ``--cv``, ...).

    Parameters
    ----------
    text : str
        The value given on the command line.

    Returns
    -------
    value : int

    Raises
    ------
    argparse.ArgumentTypeError
        If ``text`` is no integer or is below 1; ``argparse`` reports it with
        the option's name.

    Examples
    --------
    >>> positive_int("30")
    30
    >>> positive_int("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be a positive integer (1 or more), got '0'
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a positive integer (1 or more), got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"must be a positive integer (1 or more), got {text!r}"
        )
    return value
