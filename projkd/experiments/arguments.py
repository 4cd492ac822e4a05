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
from typing import Any

__all__ = [
    "at_least",
    "count_or_all",
    "non_negative_float",
    "non_negative_int",
    "nonzero_int",
    "positive_float",
    "positive_int",
    "positive_int_or",
]


def _refuse(text: str, expected: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")


def _integer(text: str, expected: str, minimum: int | None = None) -> int:
    """``text`` as an integer of at least ``minimum``, or refused."""
    try:
        value = int(text)
    except ValueError:
        raise _refuse(text, expected) from None
    if minimum is not None and value < minimum:
        raise _refuse(text, expected)
    return value


def _finite(text: str, expected: str, above: float, strictly: bool) -> float:
    """``text`` as a finite number above ``above`` (or equal, unless
    ``strictly``), or refused."""
    try:
        value = float(text)
    except ValueError:
        raise _refuse(text, expected) from None
    if not math.isfinite(value) or value < above or (strictly and value == above):
        raise _refuse(text, expected)
    return value


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

    def parse(text: str) -> int:
        return _integer(text, f"an integer of at least {minimum}", minimum)

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
    return _integer(text, "a positive integer (1 or more)", 1)


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
    return _integer(text, "an integer of 0 or more", 0)


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
    value = _integer(text, "an integer other than 0")
    if value == 0:
        raise _refuse(text, "an integer other than 0")
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
    return _finite(text, "a finite number above 0", 0.0, strictly=True)


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
    return _finite(text, "a finite number of 0 or more", 0.0, strictly=False)


def positive_int_or(word: str, meaning: Any = None) -> Callable[[str], Any]:
    """The type of a flag that takes a positive integer or ``word``.

    Parameters
    ----------
    word : str
        E.g. ``"all"``, ``"auto"``.
    meaning : object, default=None
        What ``word`` parses to.

    Examples
    --------
    >>> positive_int_or("auto", "auto")("auto"), positive_int_or("all")("12")
    ('auto', 12)
    >>> positive_int_or("all")("none")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be a positive integer (1 or more), got 'none'...
    """

    def parse(text: str) -> Any:
        if text == word:
            return meaning
        try:
            return positive_int(text)
        except argparse.ArgumentTypeError as error:
            raise argparse.ArgumentTypeError(f"{error}; or {word!r}") from None

    parse.__name__ = f"positive integer or {word!r}"
    return parse


#: A positive integer, or ``all`` (None): how many of something to use.
count_or_all = positive_int_or("all", None)
