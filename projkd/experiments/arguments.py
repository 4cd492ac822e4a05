"""Argument types the ``projkd`` commands share (for ``argparse``'s ``type=``).

Every numeric flag of every command goes through one of these: a value that
does not fit (not a number, not finite, out of range) is refused by
``argparse`` itself, before anything runs: the command's usage line, then
``projkd <command>: error: argument --epochs: ...``, exit 2.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = [
    "at_least",
    "count_or_all",
    "non_negative_float",
    "non_negative_int",
    "nonzero_int",
    "positive_float",
    "positive_int",
]


def _integer(text: str, expected: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}") from None


def at_least(minimum: int) -> Callable[[str], int]:
    """The type of an integer flag of at least ``minimum`` (``--cv``: 2).

    Parameters
    ----------
    minimum : int

    Returns
    -------
    type : callable
        ``str -> int``, raising :class:`argparse.ArgumentTypeError` for a
        value below ``minimum`` or no integer.

    Examples
    --------
    >>> at_least(2)("3")
    3
    >>> at_least(2)("1")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be an integer of at least 2, got '1'
    """
    expected = f"an integer of at least {minimum}"

    def parse(text: str) -> int:
        value = _integer(text, expected)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
        return value

    parse.__name__ = f"integer of at least {minimum}"  # argparse's "invalid ..."
    return parse


def positive_int(text: str) -> int:
    """An integer of at least 1 (``--epochs``, ``--subset``, ``--seeds``, ...).

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
    expected = "a positive integer (1 or more)"
    value = _integer(text, expected)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An integer of at least 0 (``--seed``, ``--n-projectors``, ...).

    Examples
    --------
    >>> non_negative_int("0")
    0
    >>> non_negative_int("-1")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be an integer of 0 or more, got '-1'
    """
    expected = "an integer of 0 or more"
    value = _integer(text, expected)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
    return value


def nonzero_int(text: str) -> int:
    """An integer other than 0 (``--n-jobs``: -1 means every core).

    Examples
    --------
    >>> nonzero_int("-1")
    -1
    >>> nonzero_int("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be an integer other than 0, got '0'
    """
    expected = "an integer other than 0"
    value = _integer(text, expected)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
    return value


def _finite(text: str, expected: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0 (``--time-budget`` seconds).

    Examples
    --------
    >>> positive_float("120")
    120.0
    >>> positive_float("inf")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be a finite number above 0, got 'inf'
    """
    expected = "a finite number above 0"
    value = _finite(text, expected)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number of at least 0 (the loss weights).

    Examples
    --------
    >>> non_negative_float("0.9")
    0.9
    >>> non_negative_float("nan")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be a finite number of 0 or more, got 'nan'
    """
    expected = "a finite number of 0 or more"
    value = _finite(text, expected)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
    return value


def count_or_all(text: str) -> int | None:
    """A positive integer, or ``all`` (None): how many of something to use.

    Examples
    --------
    >>> count_or_all("2000"), count_or_all("all")
    (2000, None)
    """
    if text == "all":
        return None
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"{error}; or 'all'") from None
