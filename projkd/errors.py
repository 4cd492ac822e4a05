"""projkd's errors: what the user gave and can fix from the message.

A leaf module: it imports nothing of projkd, so that every layer can raise
these without an import cycle.
"""

from __future__ import annotations

from sklearn.utils._param_validation import InvalidParameterError

__all__ = [
    "InputError",
    "InputTypeError",
    "MissingFileError",
    "ParameterError",
    "UserError",
]


class UserError(Exception):
    """Mix-in marking an error in what the user gave, fixable from its message.

    projkd's own checks raise it (mixed into ``ValueError`` or ``TypeError``
    below), so that the command line tells these apart from bugs: it reports
    a ``UserError`` in one line, without a traceback.
    """


class InputError(UserError, ValueError):
    """A parameter, an argument or data that projkd refuses (a ``ValueError``)."""


class InputTypeError(UserError, TypeError):
    """An argument or data of a type projkd refuses (a ``TypeError``)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file the user named does not exist (a ``FileNotFoundError``)."""


class ParameterError(UserError, InvalidParameterError):
    """scikit-learn's ``InvalidParameterError`` (a ``ValueError`` and
    ``TypeError``), raised by projkd's parameter validation."""
