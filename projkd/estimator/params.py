"""The distiller's own parameters in scikit-learn's and skorch's protocols.

skorch treats every ``set_params`` key that *starts with* a registered
component's name as that component's option, and every torch module set as
an attribute outside an ``initialize_*`` method as a component to register
or refuse. Neither fits a distiller's own parameters: ``student_layer``
starts with ``student``, ``logit_projector_init`` with the module
``logit_projector``, and ``teacher``, ``logit_loss`` or ``train_transform``
may be torch modules that are parameters, not components to train.
:class:`ParamsMixin` keeps them apart, at the cause:

- a constructor parameter of the distiller (a key of its
  ``_parameter_constraints``) is always a plain attribute, never a skorch
  component (:meth:`ParamsMixin.__setattr__`);
- ``set_params`` routes the distiller's parameters, the options of its
  :data:`COMPONENTS` (``student__*``, ``teacher__*``, ``logit_loss__*``) and
  skorch's options read when a fit starts (:data:`READ_AT_FIT`:
  ``iterator_train__*``, which skorch itself refuses on an initialised net)
  itself, and everything else to skorch;
- a changed value of a parameter the networks are built from
  (:data:`NETWORK_PARAMS`) re-initialises an initialised net -- networks,
  criterion and optimizer, each once, with skorch's messages -- as a
  module parameter does in skorch; an unchanged value re-initialises
  nothing, so ``est.set_params(**est.get_params())`` keeps a fitted
  estimator fitted; any other parameter takes effect at the next step.
  This holds for skorch's parameters too: skorch re-initialises a net for
  any component parameter set (``compile``, ``criterion``, ``module__*``),
  even to the value it has; here an unchanged value is skipped.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from sklearn.base import clone

__all__ = ["COMPONENTS", "NETWORK_PARAMS", "READ_AT_FIT", "ParamsMixin"]

#: the parameters whose options are routed with ``<name>__<option>``
COMPONENTS = ("student", "teacher", "logit_loss", "feature_loss")

#: skorch's options read when a fit starts (no component to re-initialise:
#: skorch itself fails on them once initialised, "Something went wrong")
READ_AT_FIT = ("iterator_train", "iterator_valid", "dataset")

#: the parameters the networks are built from (``initialize_module``)
NETWORK_PARAMS = (
    "student",
    "teacher",
    "student_layer",
    "teacher_layer",
    "hint_layers",
    "n_projectors",
    "projector",
    "logit_projector",
    "logit_projector_init",
    "channels_last",
    "mixed_precision",
)

_MISSING = object()


def _differs(old: Any, new: Any) -> bool:
    """Whether setting ``new`` over ``old`` changes the parameter."""
    if old is new:
        return False
    if old is _MISSING:
        return True
    try:
        return not bool(old == new)
    except (TypeError, ValueError, RuntimeError):  # arrays, tensors
        return True


class ParamsMixin:
    """``get_params``/``set_params`` of a distiller (a skorch mixin; see
    :mod:`projkd.estimator.params`)."""

    # provided by the host estimator (a skorch net)
    _parameter_constraints: ClassVar[dict[str, list[Any]]]
    _params_to_validate: set[str]
    initialized_: bool
    feature_weight: float
    _validate_params: Any
    _is_virtual_param: Any
    _format_reinit_msg: Any
    _initialize_module: Any
    _initialize_criterion: Any
    _initialize_optimizer: Any

    def __setattr__(self, name: str, value: Any) -> None:
        if name in type(self)._parameter_constraints:
            object.__setattr__(self, name, value)  # a parameter, not a component
        else:
            super().__setattr__(name, value)

    def __sklearn_clone__(self) -> Any:
        """An unfitted copy that *shares* the teacher instead of deep-copying it.

        The teacher is read-only (the distiller never modifies it), so every
        candidate of a search can hold the same object: one teacher in
        memory, and one teacher-output cache, for the whole search. Every
        other parameter is cloned as :func:`sklearn.base.clone` does.
        """
        params = {
            name: value if name == "teacher" else clone(value, safe=False)
            for name, value in self.get_params(deep=False).items()
        }
        copy_ = type(self)(**params)
        if hasattr(self, "_metadata_request"):
            copy_._metadata_request = copy.deepcopy(self._metadata_request)
        return copy_

    def _get_param_names(self) -> list[str]:
        # skorch lists every public attribute; its bookkeeping set is no parameter
        names = super()._get_param_names()  # type: ignore[misc]
        return [name for name in names if not name.startswith("_")]

    def _owns(self, key: str) -> bool:
        """Whether ``key`` is the distiller's (a parameter, a component's
        option, or an option of skorch's read when a fit starts) rather than
        skorch's to route."""
        if "__" in key:
            return key.split("__", 1)[0] in (*COMPONENTS, *READ_AT_FIT)
        return key in type(self)._parameter_constraints

    def _shapes_networks(self, key: str, old: Any, new: Any) -> bool:
        """Whether changing ``key`` from ``old`` to ``new`` builds other networks."""
        if key == "feature_weight":  # projectors exist for a feature term only
            return old is _MISSING or bool(old) != bool(new)
        return key.split("__", 1)[0] in NETWORK_PARAMS

    def get_params(self, deep: bool = True, **kwargs: Any) -> dict[str, Any]:
        """skorch's parameters; deep, a component's option given as
        ``<component>__<option>`` is reported as given (it wins over the
        value in the component object, which is never modified)."""
        params: dict[str, Any] = super().get_params(  # type: ignore[misc]
            deep=deep, **kwargs
        )
        if deep:
            params.update(
                (key, value)
                for key, value in vars(self).items()
                if "__" in key and key.split("__", 1)[0] in COMPONENTS
            )
        return params

    def set_params(self, **params: Any) -> Any:
        """Set parameters (see :mod:`projkd.estimator.params`).

        Returns
        -------
        self
        """
        if self.initialized_:  # an unchanged value re-initialises nothing
            params = {
                key: value
                for key, value in params.items()
                if _differs(vars(self).get(key, _MISSING), value)
            }
        own = {key: value for key, value in params.items() if self._owns(key)}
        rest = {key: value for key, value in params.items() if key not in own}
        rebuild = (
            [  # every value left here is a change (filtered above)
                key
                for key, value in own.items()
                if self._shapes_networks(key, vars(self).get(key, _MISSING), value)
            ]
            if self.initialized_
            else []
        )
        for key, value in own.items():
            setattr(self, key, value)
            if "__" in key:
                self._params_to_validate.add(key)
        if not (self.initialized_ and rebuild):
            super().set_params(**rest)  # type: ignore[misc]
            if self.initialized_ and any("__" in key for key in own):
                self._validate_params()
            return self
        # skorch's component options, applied by the one re-initialisation below
        deferred = {
            key: value
            for key, value in rest.items()
            if "__" in key
            and not key.startswith("callbacks")
            and not self._is_virtual_param(key)
        }
        super().set_params(  # type: ignore[misc]
            **{key: value for key, value in rest.items() if key not in deferred}
        )
        for key, value in deferred.items():
            setattr(self, key, value)
            self._params_to_validate.add(key)
        self._validate_params()
        changed = dict.fromkeys([*rebuild, *deferred])
        self._initialize_module(reason=self._format_reinit_msg("module", changed))
        for name in ("criterion", "optimizer"):
            reason = self._format_reinit_msg(name, triggered_directly=False)
            getattr(self, f"_initialize_{name}")(reason=reason)
        return self
