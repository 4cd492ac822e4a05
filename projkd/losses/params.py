"""What the logit and feature losses share: scikit-learn parameters, and how
the estimator's ``logit_loss`` or ``feature_loss`` becomes a loss object.

:class:`LossParameters` gives a loss object scikit-learn's
``get_params``/``set_params`` (as the kernels of its Gaussian processes), a
range check, a ``repr`` and equality by value, so that it clones, pickles and
takes part in a search through the estimator's ``<parameter>__<option>``
parameters. :func:`build_loss` turns what the user gave (a shortcut, a class,
an object, a callable) and those options into the loss the objective calls,
refusing with :class:`~projkd.errors.InputError` what cannot work.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from numbers import Real
from typing import Any, ClassVar

import numpy as np
from sklearn.base import clone

from ..errors import InputError

__all__ = ["LossParameters", "build_loss"]


class LossParameters:
    """The base of the loss objects: parameters as in scikit-learn.

    A subclass stores its ``__init__`` arguments unchanged (they are its
    parameters), names the parts its call returns in ``terms``, and lists
    the parameters :meth:`check` tests: ``_bounds`` maps a number's name to
    its upper bound (the lower is 0; ``math.inf`` for none), ``_positive``
    names the numbers that must be finite and > 0, ``_flags`` the booleans.

    Examples
    --------
    >>> class Scaled(LossParameters):
    ...     _bounds = {"scale": 10.0}
    ...     def __init__(self, scale=1.0):
    ...         self.scale = scale
    >>> Scaled().set_params(scale=2.0)
    Scaled(scale=2.0)
    >>> Scaled(scale=20.0).check()
    Traceback (most recent call last):
    ...
    ValueError: Scaled's scale must be in [0, 10.0], got 20.0.
    """

    #: the unweighted parts the loss returns, recorded in the history
    terms: ClassVar[tuple[str, ...]] = ()
    #: whether a batch of one sample is meaningless to it (a batch statistic)
    needs_pairs: bool = False
    #: the parameters whose value must lie in [0, upper bound]
    _bounds: ClassVar[dict[str, float]] = {}
    #: the parameters that must be finite numbers > 0
    _positive: ClassVar[tuple[str, ...]] = ()
    #: the parameters that must be True or False
    _flags: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def _get_param_names(cls) -> list[str]:
        if cls.__init__ is object.__init__:
            return []  # no parameters
        signature = inspect.signature(cls.__init__)
        return sorted(name for name in signature.parameters if name != "self")

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The loss's parameters, as :meth:`sklearn.base.BaseEstimator.get_params`.

        Parameters
        ----------
        deep : bool, default=True
            Unused (a loss holds no estimator); kept for scikit-learn.

        Returns
        -------
        params : dict
        """
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any) -> LossParameters:
        """Set the loss's parameters.

        Returns
        -------
        self : LossParameters
        """
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for {type(self).__name__}; its "
                    f"parameters are {valid or 'none'}."
                )
            setattr(self, name, value)
        return self

    def check(self, *, parameter: str | None = None) -> None:
        """Raise ``ValueError`` if a parameter is out of range (``fit`` calls it).

        Parameters
        ----------
        parameter : str or None, default=None
            The estimator's parameter holding the loss (``"logit_loss"``),
            named in the message as ``<parameter>__<option>``.
        """
        for name in self._get_param_names():
            value = getattr(self, name)
            number = isinstance(value, Real) and not isinstance(value, bool | np.bool_)
            if name in self._flags:
                valid, limits = isinstance(value, bool | np.bool_), "True or False"
            elif name in self._positive:
                valid = number and 0 < float(value) < math.inf
                limits = "a finite number > 0"
            elif name in self._bounds:
                upper = self._bounds[name]
                valid = number and 0 <= float(value) <= upper
                limits = "a number >= 0" if upper == math.inf else f"in [0, {upper}]"
            else:
                continue
            if not valid:
                where = f" (set by {parameter}__{name})" if parameter else ""
                raise ValueError(
                    f"{type(self).__name__}'s {name} must be {limits}, got "
                    f"{value!r}{where}."
                )

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.get_params() == other.get_params()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value


def _loss_name(value: Any) -> str:
    """How an error message names what the user gave: a class or function by
    its name, anything else by its ``repr``."""
    return getattr(value, "__qualname__", None) or repr(value)


def build_loss(
    spec: Any,
    params: Mapping[str, Any],
    *,
    parameter: str,
    shortcuts: Mapping[str, type],
    example: str,
    signature: str,
) -> Any:
    """The loss object the estimator's ``parameter`` names, with its options.

    Parameters
    ----------
    spec : str, class, loss object or callable
        What the user gave: a shortcut (a key of ``shortcuts``, built as its
        class), a class (built with ``params``, as skorch builds its
        criterion), a loss object (copied with
        ``clone(spec).set_params(**params)``, the user's object never
        modified) or any callable (taken as it is).
    params : mapping
        The estimator's ``<parameter>__*`` options.
    parameter : str
        The estimator's parameter, e.g. ``"logit_loss"``, which every error
        names.
    shortcuts : mapping of str to class
    example : str
        A valid setting with an option, shown in errors
        (``"logit_loss='dkd', logit_loss__beta=6.0"``).
    signature : str
        How the loss is called, shown in errors
        (``"(projected, teacher_features) -> loss"``).

    Returns
    -------
    loss : callable
        A :class:`LossParameters` object whose parameters passed
        :meth:`~LossParameters.check`, or the user's callable.

    Raises
    ------
    InputError
        For an unknown shortcut or anything that is not callable, a class
        that cannot be built with the options, an option the loss does not
        have, options given to a callable without ``set_params``, or a
        parameter out of range; the message names ``<parameter>__<option>``.

    Examples
    --------
    >>> from projkd.losses import LOGIT_LOSSES
    >>> build_loss("dkd", {"beta": 6.0}, parameter="logit_loss",
    ...            shortcuts=LOGIT_LOSSES, example="", signature="")
    DKDLoss(alpha=1.0, beta=6.0, standardize=False, warmup=0.08333333333333333)
    """
    kind = parameter.replace("_", " ")
    given = ", ".join(f"{parameter}__{k}={v!r}" for k, v in params.items())
    loss = shortcuts.get(spec, spec) if isinstance(spec, str) else spec
    if isinstance(loss, str) or not callable(loss):
        raise InputError(
            f"{parameter}={spec!r} is not a {kind}; use one of {sorted(shortcuts)} "
            f"(e.g. {example}), a loss object, or a callable {signature}."
        )
    if isinstance(loss, type):  # a class, built as skorch builds a criterion
        try:
            loss = loss(**params)
        except TypeError as error:
            raise InputError(
                f"{parameter}={_loss_name(spec)} could not be built with "
                f"{given or 'no arguments'}: {error}."
            ) from error
        if not callable(loss):
            raise InputError(
                f"{parameter}={_loss_name(spec)} builds {loss!r}, which is not "
                f"callable; a {kind} is called as {signature}."
            )
    elif params:
        if not hasattr(loss, "set_params"):
            raise InputError(
                f"{given} sets an option of the {kind}, but {parameter}={loss!r} "
                f"has no options to set. Use a shortcut or a loss object with "
                f"them, e.g. {example}."
            )
        try:
            loss = clone(loss).set_params(**params)
        except ValueError as error:
            raise InputError(f"{given}: {error}") from error
    if isinstance(loss, LossParameters):
        try:
            loss.check(parameter=parameter)
        except ValueError as error:
            raise InputError(str(error)) from None
    return loss
