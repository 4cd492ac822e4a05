"""The estimator's networks: the student built from what the user passed,
the frozen teacher in the form the speed settings need, and the check that
their outputs match the classes."""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import numpy as np
from skorch.utils import to_tensor
from torch import nn

from ..errors import InputError, InputTypeError
from ..features import (
    declared_map_widths,
    declared_widths,
    probe,
    probe_maps,
    resolve_feature_layer,
)
from ..losses import as_positions, check_feature_loss, check_logit_loss
from ..projectors import HintProjectors, ProjectorEnsemble
from ..projectors import logit_projector as make_logit_projector
from ..teacher.frozen import freeze_teacher, is_teacher_estimator
from ..training.compiling import FeatureForward
from ..training.device import to_channels_last
from ..training.precision import grad_scaler
from ..utils import takes_argument

__all__ = ["NetworksMixin", "build_student", "check_outputs", "frozen_teacher"]


def build_student(
    student: Any, kwargs: dict[str, Any], n_classes: int, build: Any
) -> nn.Module:
    """The student to train, never the user's object.

    Parameters
    ----------
    student : nn.Module class, factory callable or instance
    kwargs : dict
        The ``student__*`` parameters; a class or factory that takes
        ``num_classes`` gets ``n_classes`` unless it is given.
    n_classes : int
        The teacher's number of outputs.
    build : callable
        ``build(student, kwargs)`` (skorch's ``initialized_instance``).

    Returns
    -------
    module : torch.nn.Module
        Built, or a deep copy of the instance passed.
    """
    if not isinstance(student, nn.Module) and "num_classes" not in kwargs:
        if takes_argument(student, "num_classes"):
            kwargs = {**kwargs, "num_classes": n_classes}
    module = build(student, kwargs)
    if not isinstance(module, nn.Module):
        raise InputTypeError(
            f"student={_name(student)} returned a {type(module).__name__}, not a "
            "torch.nn.Module; pass a module class, a function that builds one, or "
            "a module."
        )
    return copy.deepcopy(module) if module is student else module


def frozen_teacher(
    teacher: nn.Module,
    device: Any,
    *,
    layer: str | None,
    channels_last: bool,
    compiled: bool,
    hints: tuple[str, ...] = (),
) -> nn.Module:
    """The frozen teacher (:func:`~projkd.teacher.freeze_teacher`), copied
    where a speed setting would modify the user's object: the memory format,
    or a compiled forward's permanent feature or hint hooks."""
    frozen = freeze_teacher(teacher, device)
    hooked = compiled and (
        bool(hints) or resolve_feature_layer(frozen, layer) is not None
    )
    if frozen is teacher and (channels_last or hooked):
        frozen = copy.deepcopy(frozen)
    return to_channels_last(frozen) if channels_last else frozen


def check_outputs(n_student: int, n_teacher: int, classes: np.ndarray) -> None:
    """Refuse a teacher whose outputs are not the classes, or a student whose
    outputs are not the teacher's, naming what to pass instead."""
    if n_teacher != len(classes):
        raise InputError(
            f"The teacher has {n_teacher} outputs but there are {len(classes)} "
            f"classes ({_preview(classes)}). Its output i is read as "
            "classes_[i]: pass classes= listing the teacher's classes in order."
        )
    if n_student != n_teacher:
        raise InputError(
            f"The student has {n_student} outputs but the teacher has "
            f"{n_teacher}; build the student for {n_teacher} classes "
            "(e.g. student__num_classes)."
        )


def _name(value: Any) -> str:
    return getattr(value, "__qualname__", None) or repr(value)


def _preview(values: Any, n: int = 5) -> str:
    values = list(values)
    shown = ", ".join(map(str, values[:n]))
    return shown + (", ..." if len(values) > n else "")


class NetworksMixin:
    """How a distiller builds and runs its networks (a skorch mixin).

    ``initialize_module`` builds the student, the frozen teacher and the
    projectors from one probe of both networks on a sample of the data;
    :meth:`_forward_of` gives the (compiled, when asked) forward that returns
    a network's logits and features. The host is the distiller: its
    parameters, ``_sample_input_`` and ``classes_inferred_`` set by ``fit``.
    """

    # provided by the host estimator
    _FORWARDS: ClassVar[tuple[str, ...]] = (
        "_student_forward_fn",
        "_teacher_forward_fn",
    )
    teacher: Any
    student: Any
    compile: Any
    channels_last: bool
    teacher_layer: str | None
    student_layer: str | None
    n_projectors: int
    n_teacher_features_: int
    projector: Any
    feature_weight: float
    logit_projector: bool
    logit_loss: Any
    logit_projector_init: str
    mixed_precision: str | None
    classes_inferred_: Any
    teacher_estimator_: Any
    classes_: Any
    initialized_: bool
    kd_weight: float
    hint_layers: Any
    logit_loss_: Any
    feature_loss_: Any
    feature_loss: Any
    resolve_losses: Any
    get_params_for: Any
    initialized_instance: Any
    _compute_device: Any

    def _teacher_module(self) -> nn.Module:
        if is_teacher_estimator(self.teacher):
            return self.teacher_estimator_.module_
        return self.teacher

    def initialize_module(self) -> Any:
        """Build the student, the frozen teacher and the projectors.

        The feature widths come from one forward pass of both networks on a
        sample of the training inputs, so any architecture works; before
        any fit, from the widths the networks declare
        (:func:`~projkd.features.declared_widths`).
        """
        device = self._compute_device()
        teacher = frozen_teacher(
            self._teacher_module(),
            device,
            layer=self.teacher_layer,
            channels_last=self.channels_last,
            compiled=bool(self.compile),
            hints=self.hint_names("teacher"),
        )
        sample = getattr(self, "_sample_input_", None)
        if sample is not None:
            sample = to_tensor(sample, device=device)
        d_t, n_out_t = self._widths(teacher, self.teacher_layer, "teacher", sample)
        student = build_student(
            self.student,
            # skorch's spelling of the student's options, module__*, too
            {**self.get_params_for("module"), **self.get_params_for("student")},
            n_out_t,
            self.initialized_instance,
        ).to(device)
        if self.channels_last:
            student = to_channels_last(student)
        d_s, n_out_s = self._widths(student, self.student_layer, "student", sample)
        if getattr(self, "classes_inferred_", None) is None:
            self.classes_inferred_ = np.arange(n_out_t)
        check_outputs(n_out_s, n_out_t, self.classes_)
        self.resolve_losses()
        if self.kd_weight:  # a user's loss fails here, not at the first batch
            check_logit_loss(self.logit_loss_, n_out_t, name=repr(self.logit_loss))
        if self.feature_weight:
            check_feature_loss(self.feature_loss_, d_t, name=repr(self.feature_loss))

        self.module_ = student
        self.teacher_ = teacher
        self.n_student_features_ = d_s
        self.n_teacher_features_ = d_t
        # the projectors serve the feature term alone: without it, none
        self.projectors_ = (
            ProjectorEnsemble(d_s, d_t, self.n_projectors, self.projector)
            if self.feature_weight
            else ProjectorEnsemble(d_s, d_s, 0)
        )
        self.logit_projector_ = (
            make_logit_projector(n_out_t, self.logit_projector_init)
            if self.logit_projector
            else nn.Identity()
        )
        # one projector ensemble per hint pair, on each position's channels
        self.hint_projectors_ = HintProjectors(
            self._hint_widths(student, teacher, sample), self.n_projectors
        ).to(device)
        for name in self._FORWARDS:  # rebuilt for the new modules on first use
            self.__dict__.pop(name, None)
        self.grad_scaler_ = grad_scaler(device, self.mixed_precision)
        return self

    def _widths(
        self, model: nn.Module, layer: str | None, role: str, sample: Any
    ) -> tuple[int, int]:
        """``(n_features, n_outputs)`` of a network: probed on the sample of
        the fit's inputs, else as the network declares them."""
        if sample is not None:
            return probe(model, sample, layer, role)
        declared = declared_widths(model, layer)
        if declared is None:
            raise InputError(
                f"{type(self).__name__} sizes its projectors from the networks' "
                f"feature widths, and the {role} ({type(model).__name__}) does not "
                "declare its own (no nn.Linear classifier, no num_features, or a "
                "lazy layer). Call fit(X, y) or partial_fit(X, y), which measure "
                "them on the data, instead of initialize()."
            )
        return declared

    def has_hints(self) -> bool:
        """Whether ``hint_layers`` names any pair (a value that is not a
        sequence of pairs, refused when a fit starts, names none)."""
        return bool(self._hints()[0])

    def hint_names(self, network: str) -> tuple[str, ...]:
        """The ``network``'s (``"student"``, ``"teacher"``) hint layers, in
        the order of ``hint_layers`` (``()`` without hints)."""
        return self._hints()[0 if network == "student" else 1]

    def _hints(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The student's and the teacher's hint layers."""
        hint_layers = self.hint_layers
        try:  # a sequence of pairs (len: an iterator is never consumed here)
            if not len(hint_layers):
                return (), ()
            pairs = [tuple(pair) for pair in hint_layers]
            return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)
        except (TypeError, IndexError):  # refused when a fit starts
            return (), ()

    def _hint_widths(
        self, student: nn.Module, teacher: nn.Module, sample: Any
    ) -> list[tuple[int, int]]:
        """``(C_s, C_t)`` of every hint pair: measured on the sample (the
        student's map pooled to the teacher's positions), else as the layers
        declare them."""
        names = self.hint_names("student"), self.hint_names("teacher")
        if not names[0]:
            return []
        if sample is not None:
            s_maps = probe_maps(student, sample, names[0], "student")
            t_maps = probe_maps(teacher, sample, names[1], "teacher")
            return [
                (as_positions(s, like=t).shape[-1], as_positions(t).shape[-1])
                for s, t in zip(s_maps, t_maps, strict=True)
            ]
        s_widths = declared_map_widths(student, names[0])
        t_widths = declared_map_widths(teacher, names[1])
        if s_widths is None or t_widths is None:
            raise InputError(
                f"{type(self).__name__} sizes its hint projectors from the hint "
                "layers' channels, and a hint layer does not declare them (not a "
                "convolution or a Linear). Call fit(X, y), which measures them on "
                "the data, instead of initialize()."
            )
        return list(zip(s_widths, t_widths, strict=True))

    def _check_projectors(self) -> None:
        """Refuse to train on a feature term the initialised networks lack
        (the projectors are built for the weights of the first fit)."""
        projectors = getattr(self, "projectors_", None)
        if not isinstance(projectors, ProjectorEnsemble) or not self.feature_weight:
            return  # none yet, no feature term, or wrapped for several processes
        if (len(projectors), projectors.out_features) != (
            self.n_projectors,
            self.n_teacher_features_,
        ):
            raise InputError(
                f"feature_weight={self.feature_weight} needs {self.n_projectors} "
                f"projector(s) to width {self.n_teacher_features_}, but this "
                "estimator was initialised without them (feature_weight=0, or "
                "another n_projectors). Fit it afresh (warm_start=False)."
            )

    def _forward_of(
        self,
        name: str,
        model: nn.Module,
        layer: str | None,
        *,
        tap: bool = False,
        hints: tuple[str, ...] = (),
    ) -> Any:
        """The :class:`~projkd.training.compiling.FeatureForward` running ``model``.

        With ``compile=True`` it is compiled (skorch's compile of ``module_``
        alone would leave ``forward_features``/``forward_head`` eager). Built
        for the module the estimator holds *now*, so that a wrapper put
        around ``module_`` later (DDP by Accelerate) is called, and never
        pickled (it would hold a second copy of the networks).
        """
        forward = self.__dict__.get(name)
        if forward is None or forward.source is not model or forward.hints != hints:
            kwargs = self.get_params_for("compile") if self.compile else None
            network = "teacher" if "teacher" in name else "student"  # for errors
            forward = self.__dict__[name] = FeatureForward(
                model, layer, kwargs, tap, network=network, hints=hints
            )
        return forward

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()  # type: ignore[misc,assignment]
        for name in self._FORWARDS:
            state.pop(name, None)
        return state
