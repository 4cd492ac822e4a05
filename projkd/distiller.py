"""ProjectorDistiller: projector-ensemble knowledge distillation as an estimator."""

from __future__ import annotations

import copy
import inspect
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from sklearn.base import clone
from sklearn.utils import TransformerTags
from sklearn.utils.validation import check_is_fitted
from skorch import NeuralNetClassifier
from skorch.callbacks import EpochTimer, PassthroughScoring, PrintLog
from skorch.dataset import get_len, unpack_data
from skorch.history import History
from skorch.utils import is_dataset, to_numpy, to_tensor
from torch import Tensor, nn

from ._data_mixin import ArrayDataMixin
from ._labels import encode_labels, label_space
from ._random import seeded
from ._validation import (
    DISTILLER_CONSTRAINTS,
    check_input,
    check_input_shape,
    check_params,
    check_target,
)
from .features import (
    first_inputs,
    forward_with_features,
    logits_of,
    probe,
    resolve_feature_layer,
)
from .losses import distillation_loss
from .projectors import ProjectorEnsemble
from .projectors import logit_projector as make_logit_projector
from .teacher.frozen import fit_teacher_estimator, freeze_teacher, is_teacher_estimator
from .training.batching import CachedTeacherBatch
from .training.compiling import FeatureForward
from .training.device import DeviceStats, cudnn_benchmark, to_channels_last
from .training.precision import autocast, check_supported, grad_scaler, scaled_step

__all__ = ["DistillationOutput", "NonFiniteLossError", "ProjectorDistiller"]

LOSS_TERMS = ("ce", "kd", "feat")
_FORWARDS = ("_student_forward_fn", "_teacher_forward_fn")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; no weight was updated with it."""


class DistillationOutput(NamedTuple):
    """Everything one distillation forward pass produces.

    The student's logits come first: skorch takes the first element of a
    tuple output as the prediction.
    """

    logits: Tensor
    features: Tensor
    projected: Tensor
    kd_logits: Tensor
    teacher_logits: Tensor
    teacher_features: Tensor


def _softmax(logits: Tensor) -> Tensor:
    return torch.softmax(logits, dim=-1)


class ProjectorDistiller(ArrayDataMixin, NeuralNetClassifier):
    """Distil a frozen teacher into a student through an ensemble of projectors.

    The student is trained on
    ``ce_weight * CE + kd_weight * KD + feature_weight * (1 - cos(f(s), t))``
    where ``s`` and ``t`` are the student's and teacher's penultimate features
    and ``f`` is the mean of ``n_projectors`` independently initialised
    projectors. Projectors train with the student in one optimizer and are
    dropped at prediction time: ``predict``, ``predict_proba`` and ``score``
    run the student alone.

    This class subclasses skorch's :class:`~skorch.NeuralNetClassifier` rather
    than wrapping one, so every skorch parameter (``max_epochs``, ``lr``,
    ``batch_size``, ``optimizer__*``, ``callbacks``, ``device``,
    ``train_split``, ``iterator_train__*``, ...), the history, checkpoints
    and ``save_params``/``load_params`` work unchanged, and the estimator is
    a scikit-learn classifier for ``clone``, ``GridSearchCV``, ``Pipeline``
    and ``cross_val_score``.

    Parameters
    ----------
    teacher : torch.nn.Module
        The pretrained teacher. It is frozen: it runs without gradients and in
        eval mode (its BatchNorm statistics never move), and never reaches
        the optimizer. The object passed in is never modified; it is used
        directly when it already is in eval mode on ``device``, else a copy
        is. Its output ``i`` is taken to mean ``classes_[i]``.
    student : torch.nn.Module class, factory callable or instance
        The network to train. A class or a factory -- any callable returning
        a module, e.g. a registry entry such as
        ``functools.partial(projkd.models.get_model, "resnet8")`` -- is
        called *inside* ``fit``, under ``random_state``, with the
        ``student__*`` parameters (as skorch does with ``module__*``) and
        ``num_classes`` set to the teacher's number of outputs when it takes
        that argument. An instance is deep-copied, so the object passed in
        stays as it was; its initial weights are those it was built with,
        drawn from torch's global generator outside ``random_state``'s
        reach: for reproducible runs build it under ``torch.manual_seed``,
        or pass a class or factory.
    n_projectors : int, default=3
        Number of projectors in the ensemble. ``0`` compares the student's
        features with the teacher's directly (the widths must then be equal).
    projector : {"linear", "mlp"} or callable, default="linear"
        ``"linear"`` is the paper's ``Linear(d_s, d_t) + ReLU``; ``"mlp"`` is
        ``Linear - BatchNorm - ReLU - Linear``; a callable
        ``(d_s, d_t) -> nn.Module`` builds a custom projector.
    feature_weight : float, default=25.0
        Weight of the feature term ``1 - cos(f(s), t)``.
    kd_weight : float, default=0.0
        Weight of the KD term ``T^2 KL(softmax(z_t/T) || softmax(z_s/T))``.
    ce_weight : float, default=1.0
        Weight of the cross-entropy term.
    temperature : float, default=4.0
        The KD temperature ``T``.
    logit_projector : bool, default=False
        Compute the KD term on a learned ``Linear(C, C)`` of the student's
        logits (the paper's "projectors help logit distillation").
        Predictions use the raw logits.
    logit_projector_init : {"identity", "default"}, default="identity"
        How the logit projector starts. ``"identity"`` (``W = I, b = 0``) lets
        KD first see the raw logits, so the student keeps the teacher's class
        order; ``"default"`` is PyTorch's random init, as in the reference code
        (chenyd7/PEFD), which can satisfy KD in a scrambled basis while the
        raw logits, used for prediction, learn little.
    teacher_layer, student_layer : str or None, default=None
        Name of the module whose (average-pooled) output is the network's
        feature. ``None`` uses ``forward_features``/``forward_head`` when the
        network has them, else the input of its last ``nn.Linear``.
    cache_teacher : {"auto"} or bool, default="auto"
        Compute the teacher's outputs once, in large no-grad batches, and
        look them up during training and validation instead of running the
        teacher every step. ``"auto"``: on for array input without
        ``train_transform``. The cache is per sample and shared by every
        estimator holding the same teacher object in the same state (its
        tensors, and its outputs on a probe batch), so a cross-validated
        search runs the teacher over each sample about once, and a teacher
        changed in place is never served old outputs. Its memory is bounded:
        see :func:`projkd.teacher.set_teacher_cache_limit`.
    memory : str, joblib.Memory or None, default=None
        Keep the teacher's outputs in this joblib cache (a folder) instead of
        in memory: shared across processes (parallel searches) and runs.
    nonfinite_loss : {"raise", "skip"}, default="raise"
        What a NaN or infinite training loss does: ``"raise"`` stops with a
        :class:`NonFiniteLossError` naming the epoch, the batch and the term,
        keeping the last finite weights; ``"skip"`` warns and skips the batch.
    train_transform : callable or None, default=None
        Augmentation applied to each *training* batch on ``device``, e.g.
        :class:`projkd.augment.RandomCropFlip` (crop + flip, per sample). The
        teacher sees exactly the augmented view the student sees; validation
        and prediction never augment.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation (the student when given as a class or factory,
        and the projectors), shuffling and dropout for the duration of
        ``fit``, and the initialisation in a first ``partial_fit`` (torch's
        global generators are restored afterwards). Two fits with the same
        seed and data give bit-identical predictions on CPU.
    mixed_precision : {None, "bf16", "fp16"}, default=None
        Run the teacher, the student and the projectors under autocast at
        this precision (the loss terms are computed in float32). ``"fp16"``
        scales the loss with a :class:`torch.amp.GradScaler`, which skips
        steps whose gradients overflow. bf16 works on CPUs and GPUs.
        Predictions are float32 probabilities; cached teacher outputs are
        stored at this precision (half the memory of float32).
    channels_last : bool, default=False
        Keep the student, the teacher and the input batches in
        ``torch.channels_last`` memory format (faster convolutions on GPUs
        with tensor cores). Needs image input ``(N, C, H, W)``.
    data_device : {"auto"} or str or torch.device, default="auto"
        Where array input lives during ``fit``. ``"auto"``: on the compute
        device when it is an accelerator and the arrays take under
        :data:`projkd.training.device.DEVICE_MEMORY_FRACTION` of its free memory
        (shuffling, slicing, augmentation and the teacher cache then all
        stay there), else on the host, from where batches are copied from
        pinned memory one batch ahead. A tensor already on the device is
        never copied back.
    compile : bool, default=False
        skorch's parameter: ``True`` compiles, with :func:`torch.compile`
        and the ``compile__*`` parameters, what trains -- the student's
        forward with its features (through ``forward_features`` and
        ``forward_head`` where it has them), the projectors, and the
        teacher's forward when it is not served from the cache.
    criterion : torch criterion class, default=torch.nn.CrossEntropyLoss
        The classification loss on the student's logits.
    predict_nonlinearity : callable, None or "auto", default="auto"
        ``"auto"`` applies softmax, whatever the criterion.
    **kwargs
        Any other skorch parameter; ``student__*`` are passed to the student's
        constructor.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The labels: the ``classes`` parameter if given, else the sorted
        unique labels of ``y``. For a torch ``Dataset`` without ``y`` its
        targets are class indices and ``classes_`` is ``arange(n_classes)``.
    module_ : torch.nn.Module
        The trained student.
    teacher_ : torch.nn.Module
        The frozen teacher used for training.
    projectors_ : ProjectorEnsemble
        The trained projectors (unused by prediction).
    logit_projector_ : torch.nn.Module
        ``Linear(C, C)`` with ``logit_projector=True``, else the identity.
    n_student_features_, n_teacher_features_ : int
        The feature widths found by probing the networks.
    history_ : skorch.History
        Per epoch: ``train_loss`` and its terms ``train_ce``, ``train_kd``,
        ``train_feat`` (unweighted), ``train_acc``, ``valid_loss``,
        ``valid_acc``.

    References
    ----------
    Chen, Wang, Liu, Xu, de Hoog, Kusy, Huang. "Understanding the Effects of
    Projectors in Knowledge Distillation", arXiv:2310.17183, 2023.
    Chen et al. "Improved Feature Distillation via Projector Ensemble",
    NeurIPS 2022, arXiv:2210.15274.

    Examples
    --------
    >>> from projkd import ProjectorDistiller
    >>> from projkd.data import load_digits
    >>> from projkd.models import DigitsCNN
    >>> X, y = load_digits()
    >>> teacher = DigitsCNN(width=8).eval()
    >>> est = ProjectorDistiller(teacher, DigitsCNN, student__width=4,
    ...                          max_epochs=1, verbose=0, random_state=0)
    >>> est.fit(X, y).predict(X[:3]).shape
    (3,)
    """

    # The teacher, the student and the train transform are parameters, not
    # skorch components: listing them here lets skorch accept modules for
    # them in set_params and route ``student__*``, and keeps the frozen
    # teacher out of skorch's module handling (train mode, optimizer, device
    # moves, compilation), which is exactly what frozen means.
    prefixes_ = NeuralNetClassifier.prefixes_ + [
        "student",
        "teacher",
        "train_transform",
    ]
    cuda_dependent_attributes_ = NeuralNetClassifier.cuda_dependent_attributes_ + [
        "teacher_"
    ]
    # scikit-learn's declaration of parameter constraints; subclasses extend it
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = DISTILLER_CONSTRAINTS

    def __init__(
        self,
        teacher: nn.Module,
        student: Any,
        *,
        n_projectors: int = 3,
        projector: Any = "linear",
        feature_weight: float = 25.0,
        kd_weight: float = 0.0,
        ce_weight: float = 1.0,
        temperature: float = 4.0,
        logit_projector: bool = False,
        logit_projector_init: str = "identity",
        teacher_layer: str | None = None,
        student_layer: str | None = None,
        cache_teacher: Any = "auto",
        memory: Any = None,
        nonfinite_loss: str = "raise",
        train_transform: Any = None,
        random_state: Any = None,
        mixed_precision: str | None = None,
        channels_last: bool = False,
        data_device: Any = "auto",
        criterion: Any = nn.CrossEntropyLoss,
        predict_nonlinearity: Any = "auto",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("iterator_train__shuffle", True)  # SGD wants shuffling
        super().__init__(
            student,
            criterion=criterion,
            predict_nonlinearity=predict_nonlinearity,
            **kwargs,
        )
        self.teacher = teacher
        self.n_projectors = n_projectors
        self.projector = projector
        self.feature_weight = feature_weight
        self.kd_weight = kd_weight
        self.ce_weight = ce_weight
        self.temperature = temperature
        self.logit_projector = logit_projector
        self.logit_projector_init = logit_projector_init
        self.teacher_layer = teacher_layer
        self.student_layer = student_layer
        self.cache_teacher = cache_teacher
        self.memory = memory
        self.nonfinite_loss = nonfinite_loss
        self.train_transform = train_transform
        self.random_state = random_state
        self.mixed_precision = mixed_precision
        self.channels_last = channels_last
        self.data_device = data_device

    def __sklearn_clone__(self) -> ProjectorDistiller:
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
        return [name for name in super()._get_param_names() if not name.startswith("_")]

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.transformer_tags = TransformerTags(preserves_dtype=[])
        return tags

    # skorch calls the network ``module``; here it is the student.
    @property
    def module(self) -> Any:
        return self.student

    @module.setter
    def module(self, value: Any) -> None:
        self.student = value

    @property
    def _default_callbacks(self) -> list[tuple[str, Any]]:
        train_terms = [
            (f"train_{term}", PassthroughScoring(name=f"train_{term}", on_train=True))
            for term in LOSS_TERMS
        ]
        return [
            ("epoch_timer", EpochTimer()),
            ("train_loss", PassthroughScoring(name="train_loss", on_train=True)),
            *train_terms,
            (
                "train_acc",
                PassthroughScoring(
                    name="train_acc", lower_is_better=False, on_train=True
                ),
            ),
            ("valid_loss", PassthroughScoring(name="valid_loss")),
            ("valid_acc", PassthroughScoring(name="valid_acc", lower_is_better=False)),
            ("print_log", PrintLog()),
        ]

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any = None, **fit_params: Any) -> ProjectorDistiller:
        """Validate the input, then initialise and train the student.

        Parameters
        ----------
        X : array-like of shape (N, C, H, W) or (N, D), torch.Tensor or Dataset
            Inputs; arrays are used as float32. A ``Dataset`` yields
            ``(x, target)`` pairs with integer class-index targets.
        y : array-like of shape (N,) or None
            Labels of any type scikit-learn accepts (integers, strings).
        **fit_params
            Passed to skorch's ``fit``.

        Returns
        -------
        self : ProjectorDistiller
        """
        if "sample_weight" in fit_params:
            raise TypeError(
                f"{type(self).__name__}.fit does not support sample_weight; "
                "resample the training data instead."
            )
        reset = not (self.warm_start and self.initialized_)
        X, y = self._prepare_fit(X, y, reset=reset)
        if reset:
            self._fit_teacher(X, y)
        device = self._compute_device()
        with seeded(self.random_state, device), cudnn_benchmark(device):
            return super().fit(X, y, **fit_params)

    def partial_fit(
        self, X: Any, y: Any = None, classes: Any = None, **fit_params: Any
    ) -> ProjectorDistiller:
        """Train for ``max_epochs`` more epochs without re-initialising.

        Parameters
        ----------
        X, y
            As in :meth:`fit`.
        classes : array-like or None, default=None
            All labels; needed on the first call when ``y`` misses some.
        **fit_params
            Passed to skorch's ``partial_fit``.

        Returns
        -------
        self : ProjectorDistiller
        """
        if fit_params.get("_routing_method") != "fit":  # fit has prepared X, y
            X, y = self._prepare_fit(X, y, reset=not self.initialized_, classes=classes)
            if not self.initialized_:
                self._fit_teacher(X, y)
                with seeded(self.random_state, self._compute_device()):
                    self.initialize()  # networks built under the seed, as in fit
        with cudnn_benchmark(self._compute_device()):
            return super().partial_fit(X, y, **fit_params)

    def _fit_teacher(self, X: Any, y: Any) -> None:
        """Fit a teacher given as an estimator on this fit's training data.

        Seeded on its own, so that whether the fitted teacher comes from the
        cache or not, the student's random stream is the same.
        """
        if not is_teacher_estimator(self.teacher):
            return
        if y is not None:
            y = self._encode(y)  # the teacher's output i is classes_[i]
        with seeded(self.random_state, self._compute_device()):
            self.teacher_estimator_ = fit_teacher_estimator(
                self.teacher, X, y, params=self.get_params_for("teacher")
            )

    def _teacher_module(self) -> nn.Module:
        if is_teacher_estimator(self.teacher):
            return self.teacher_estimator_.module_
        return self.teacher

    def _compute_device(self) -> Any:
        """Where the networks run (skorch's ``device``; None means the CPU)."""
        return self.device if self.device is not None else "cpu"

    def _prepare_fit(
        self, X: Any, y: Any, *, reset: bool, classes: Any = None
    ) -> tuple[Any, Any]:
        check_params(self)
        X = check_input(X)
        if y is not None:
            y = check_target(y, None if is_dataset(X) else len(X))
        elif not is_dataset(X):
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is "
                "None; pass labels, or a Dataset that yields them."
            )
        if not reset:
            expected: tuple[int, ...] | None = getattr(self, "input_shape_", None)
            check_input_shape(X, expected, type(self).__name__)
        if self.cache_teacher not in ("auto", False) and (
            self.train_transform is not None or is_dataset(X)
        ):
            raise ValueError(
                "cache_teacher=True needs array input and no train_transform: a "
                "random augmentation changes the teacher's output at every step. "
                "Use cache_teacher='auto' or False."
            )
        self._check_fast_settings(X)
        if reset:
            self.input_shape_ = None if is_dataset(X) else tuple(X.shape[1:])
            if self.input_shape_ is not None:
                self.n_features_in_ = math.prod(self.input_shape_)
            self.classes_inferred_ = label_space(
                y, self.classes if self.classes is not None else classes
            )
            self._sample_input_ = first_inputs(X)
        if y is not None and not is_dataset(X):
            self._encode(y)  # fail on unknown labels before any training
        return X, y

    def _encode(self, y: Any) -> np.ndarray:
        return encode_labels(y, self.classes_)

    def _check_fast_settings(self, X: Any) -> None:
        """Refuse speed settings that cannot work, before training."""
        check_supported(self._compute_device(), self.mixed_precision)
        if self.data_device != "auto":
            try:
                torch.device(self.data_device)
            except (RuntimeError, ValueError) as error:
                raise ValueError(
                    f"data_device={self.data_device!r} is not a device; use 'auto', "
                    "'cpu', 'cuda' or 'cuda:<index>'."
                ) from error
        if self.channels_last:
            ndim = first_inputs(X, n=1).ndim if is_dataset(X) else X.ndim
            if ndim != 4:
                raise ValueError(
                    "channels_last=True needs image batches of shape (N, C, H, W), "
                    f"but the inputs have {ndim} dimensions. Use channels_last=False "
                    "for other input."
                )

    # -------------------------------------------------------- initialisation
    def initialize_module(self) -> ProjectorDistiller:
        """Build the student, the frozen teacher and the projectors.

        The feature widths come from one forward pass of both networks on a
        sample of the training inputs, so any architecture works.
        """
        sample = getattr(self, "_sample_input_", None)
        if sample is None:
            raise ValueError(
                f"{type(self).__name__} sizes its projectors from the data; call "
                "fit(X, y) or partial_fit(X, y) instead of initialize()."
            )
        device = self._compute_device()
        teacher = self._frozen_teacher(device)
        sample = to_tensor(sample, device=device)
        d_t, n_out_t = probe(teacher, sample, self.teacher_layer, "teacher")
        student = self._build_student(n_out_t).to(device)
        if self.channels_last:
            student = to_channels_last(student)
        d_s, n_out_s = probe(student, sample, self.student_layer, "student")
        self._check_outputs(n_out_s, n_out_t)

        self.module_ = student
        self.teacher_ = teacher
        self.n_student_features_ = d_s
        self.n_teacher_features_ = d_t
        self.projectors_ = ProjectorEnsemble(
            d_s, d_t, self.n_projectors, self.projector
        )
        self.logit_projector_ = (
            make_logit_projector(n_out_t, self.logit_projector_init)
            if self.logit_projector
            else nn.Identity()
        )
        for name in _FORWARDS:  # rebuilt for the new modules on first use
            self.__dict__.pop(name, None)
        self.grad_scaler_ = grad_scaler(device, self.mixed_precision)
        return self

    def _forward_of(
        self, name: str, model: nn.Module, layer: str | None, *, tap: bool = False
    ) -> Any:
        """The :class:`~projkd.training.compiling.FeatureForward` running ``model``.

        With ``compile=True`` it is compiled (skorch's compile of ``module_``
        alone would leave ``forward_features``/``forward_head`` eager). Built
        for the module the estimator holds *now*, so that a wrapper put
        around ``module_`` later (DDP by Accelerate) is called, and never
        pickled (it would hold a second copy of the networks).
        """
        forward = self.__dict__.get(name)
        if forward is None or forward.source is not model:
            kwargs = self.get_params_for("compile") if self.compile else None
            network = "teacher" if "teacher" in name else "student"  # for errors
            forward = self.__dict__[name] = FeatureForward(
                model, layer, kwargs, tap, network=network
            )
        return forward

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        for name in (*_FORWARDS, "_epoch_stats", "_epoch_batches"):
            state.pop(name, None)
        return state

    def _frozen_teacher(self, device: Any) -> nn.Module:
        """The frozen teacher, copied where a speed setting would modify the
        user's object (memory format, a compiled feature hook)."""
        user = self._teacher_module()
        teacher = freeze_teacher(user, device)
        hooked = bool(self.compile) and (
            resolve_feature_layer(teacher, self.teacher_layer) is not None
        )
        if teacher is user and (self.channels_last or hooked):
            teacher = copy.deepcopy(teacher)
        if self.channels_last:
            teacher = to_channels_last(teacher)
        return teacher

    def _build_student(self, n_classes: int) -> nn.Module:
        """Build (or copy) the student; a class or factory that takes
        ``num_classes`` gets the teacher's number of outputs unless
        ``student__num_classes`` is set."""
        kwargs = self.get_params_for("student")
        builds = not isinstance(self.student, nn.Module)
        if builds and "num_classes" not in kwargs:
            if _takes_argument(self.student, "num_classes"):
                kwargs["num_classes"] = n_classes
        student = self.initialized_instance(self.student, kwargs)
        if not isinstance(student, nn.Module):
            raise TypeError(
                f"student={_name(self.student)} returned a "
                f"{type(student).__name__}, not a torch.nn.Module; pass a module "
                "class, a function that builds one, or a module."
            )
        if student is self.student:
            student = copy.deepcopy(student)  # never train the user's object
        return student

    def _check_outputs(self, n_out_student: int, n_out_teacher: int) -> None:
        if self.classes_inferred_ is None:
            self.classes_inferred_ = np.arange(n_out_teacher)
        n_classes = len(self.classes_)
        if n_out_teacher != n_classes:
            raise ValueError(
                f"The teacher has {n_out_teacher} outputs but there are {n_classes} "
                f"classes ({_preview(self.classes_)}). Its output i is read as "
                "classes_[i]: pass classes= listing the teacher's classes in order."
            )
        if n_out_student != n_out_teacher:
            raise ValueError(
                f"The student has {n_out_student} outputs but the teacher has "
                f"{n_out_teacher}; build the student for {n_out_teacher} classes "
                "(e.g. student__num_classes)."
            )

    def set_params(self, **kwargs: Any) -> ProjectorDistiller:
        """Set parameters; ``student__*`` re-initialise a fitted student."""
        student_params = {k: v for k, v in kwargs.items() if k.startswith("student__")}
        super().set_params(
            **{k: v for k, v in kwargs.items() if k not in student_params}
        )
        if student_params:
            self.__dict__.update(student_params)
            self._params_to_validate.update(student_params)
            if self.initialized_:
                self._validate_params()
                self._initialize_module()
                self._initialize_criterion()
                self._initialize_optimizer()
        return self

    # ------------------------------------------------------------- training
    def _set_training(self, training: bool = True) -> None:
        """skorch's mode switch, skipped when every module already is in
        ``training`` mode: ``Module.train`` walks every submodule, which on a
        small network costs more host time per step than its forward pass.
        (A submodule put in another mode by hand keeps it until the next
        switch between training and evaluation.)"""
        for name in self._modules + self._criteria:
            module = getattr(self, name + "_", None)
            if isinstance(module, nn.Module) and module.training != training:
                super()._set_training(training)
                return

    def _as_input(self, x: Tensor) -> Tensor:
        return to_channels_last(x) if self.channels_last else x

    def infer(self, x: Any, **fit_params: Any) -> DistillationOutput:
        """The distillation forward pass: teacher (no grad, or looked up in the
        cache), student, projectors -- under autocast with ``mixed_precision``."""
        with autocast(self.device, self.mixed_precision):
            if not isinstance(x, CachedTeacherBatch):
                x = self._teacher_batch(x, training=self.module_.training)
            x, teacher_logits, teacher_features = (
                to_tensor(t, device=self.device) for t in x
            )
            x = self._as_input(x)
            logits, features = self._student_forward(x)
            return DistillationOutput(
                logits=logits,
                features=features,
                projected=self.projectors_(features),
                kd_logits=self.logit_projector_(logits)
                if self.logit_projector
                else logits,
                teacher_logits=teacher_logits,
                teacher_features=teacher_features,
            )

    def _teacher_batch(self, x: Any, *, training: bool) -> CachedTeacherBatch:
        """The batch as the student will see it -- on the device, augmented
        when ``training`` (one view for student and teacher), in its memory
        format -- with the teacher's outputs for it. Call under autocast.

        :func:`~projkd.lockstep.fit_lockstep` calls it once per batch for
        all its estimators.
        """
        x = to_tensor(x, device=self.device)
        if training and self.train_transform is not None:
            x = self.train_transform(x)
        x = self._as_input(x)
        with torch.no_grad():
            logits, features = self._forward_of(
                "_teacher_forward_fn", self.teacher_, self.teacher_layer
            )(x)
        return CachedTeacherBatch(x, logits, features)

    def _student_forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The student's logits and features (data-parallel subclasses route
        this through DDP's forward)."""
        # module_ is the estimator's own copy: a permanent feature tap is fine
        forward = self._forward_of(
            "_student_forward_fn", self.module_, self.student_layer, tap=True
        )
        return forward(x)

    def get_loss(
        self, y_pred: Any, y_true: Any, X: Any = None, training: bool = False
    ) -> Tensor:
        """The weighted distillation loss, computed in float32; its terms go
        to the batch history.

        The terms and the accuracy stay on the device during an epoch and
        reach the history at its end (one transfer); only the finiteness of
        the training loss is read per batch, which ``nonfinite_loss`` needs
        before the optimizer step.
        """
        if not isinstance(y_pred, DistillationOutput):
            return super().get_loss(y_pred, y_true, X=X, training=training)
        y_true = to_tensor(y_true, device=self.device)
        out = y_pred
        if any(t.dtype in (torch.float16, torch.bfloat16) for t in y_pred):
            out = DistillationOutput(*(t.float() for t in y_pred))
        loss, terms = distillation_loss(
            out.logits,
            y_true,
            teacher_logits=out.teacher_logits,
            projected=out.projected,
            teacher_features=out.teacher_features,
            kd_logits=out.kd_logits,
            ce_weight=self.ce_weight,
            kd_weight=self.kd_weight,
            feature_weight=self.feature_weight,
            temperature=self.temperature,
            ce_loss=self.criterion_,
        )
        with torch.no_grad():  # statistics: no graph, no detach
            accuracy = (out.logits.argmax(dim=1) == y_true).float().mean()
            values = torch.stack([*(terms[t] for t in LOSS_TERMS), accuracy, loss])
        if training and not bool(torch.isfinite(loss)):
            recorded = values.tolist()
            return self._nonfinite_loss(
                float(loss.detach()), dict(zip(LOSS_TERMS, recorded, strict=False))
            )
        prefix = "train" if training else "valid"
        stats = getattr(self, "_epoch_stats", None)
        if stats is not None:
            stats.add((len(self._epoch_batches) - 1, prefix), values)
        else:
            self._record_terms(prefix, values.tolist())
        return loss

    def _record_terms(
        self, prefix: str, values: list[float], batch: Any = None
    ) -> None:
        names = [f"{prefix}_{term}" for term in LOSS_TERMS] + [f"{prefix}_acc"]
        for name, value in zip(names, values, strict=False):  # the loss comes last
            if batch is None:
                self.history.record_batch(name, value)
            else:
                batch[name] = value

    def train_step_single(self, batch: Any, **fit_params: Any) -> dict[str, Any]:
        """skorch's step; with ``mixed_precision="fp16"`` the loss is scaled
        before the backward pass."""
        scaler = getattr(self, "grad_scaler_", None)
        if scaler is None:
            return super().train_step_single(batch, **fit_params)
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        y_pred = self.infer(Xi, **fit_params)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        scaler.scale(loss).backward()
        return {"loss": loss, "y_pred": y_pred}

    def train_step(self, batch: Any, **fit_params: Any) -> dict[str, Any]:
        """skorch's step, or with ``mixed_precision="fp16"`` the gradient
        scaler's: gradients are unscaled before ``on_grad_computed`` (so
        clipping callbacks see true values), and a step whose gradients
        overflowed is skipped (no closure: the scaler does not support one)."""
        scaler = getattr(self, "grad_scaler_", None)
        if scaler is None:
            return super().train_step(batch, **fit_params)
        self._zero_grad_optimizer()
        step = self.train_step_single(batch, **fit_params)
        if step["loss"].grad_fn is None:  # a skipped non-finite batch
            return step
        scaled_step(self, scaler, batch)
        return step

    def on_batch_begin(
        self, net: Any, batch: Any = None, training: bool = False, **kwargs: Any
    ) -> None:
        """skorch's new batch row, appended without History's slow indexing."""
        if type(self.history) is History:
            list.__getitem__(self.history, -1)["batches"].append({})
        else:
            super().on_batch_begin(net, batch=batch, training=training, **kwargs)

    def run_single_epoch(
        self,
        iterator: Any,
        training: bool,
        prefix: str,
        step_fn: Any,
        **fit_params: Any,
    ) -> None:
        """skorch's epoch loop without its per-batch ``step["loss"].item()``.

        skorch reads every batch's loss back to the host as soon as the step
        is queued, which makes the CPU wait for the accelerator to finish the
        step before it can queue the next one: the GPU idles for the launch
        overhead of every batch. Here the batch losses, loss terms and
        accuracies stay on the device and fill the batch entries of the
        history in one transfer at the end of the loop, before
        ``on_epoch_end`` scorers read them (:meth:`_device_records`). One read
        per training batch remains: whether its loss is finite, which
        ``nonfinite_loss`` needs before the optimizer step. Everything else --
        the callbacks' ``on_batch_begin``/``on_batch_end`` (``ProgressBar``
        keeps counting batches), batch sizes, the batch count -- is as in
        skorch.
        """
        if iterator is None:
            return
        with self._device_records(prefix, training) as run_batch:
            for batch in iterator:
                run_batch(batch, step_fn, **fit_params)

    @contextmanager
    def _device_records(self, prefix: str, training: bool) -> Iterator[Any]:
        """One epoch's batch records, kept on the device until it ends.

        Yields ``run_batch(batch, step_fn, **fit_params)``, which runs one
        step between the ``on_batch_begin``/``on_batch_end`` notifications
        and returns it; the records reach the history when the block ends,
        and the batch count when it ends normally. Used by
        :meth:`run_single_epoch` and :func:`~projkd.lockstep.fit_lockstep`.
        """
        stats = DeviceStats()
        self._epoch_stats: DeviceStats | None = stats
        # the epoch's batch list, read once: History's own indexing costs
        # more host time than a small network's step
        batches = self._epoch_batches = list.__getitem__(self.history, -1)["batches"]
        losses = DeviceStats()  # of batches whose get_loss recorded nothing
        count = 0

        def run_batch(batch: Any, step_fn: Any, **fit_params: Any) -> Any:
            nonlocal count
            self.notify("on_batch_begin", batch=batch, training=training)
            recorded = len(stats.keys)
            step = step_fn(batch, **fit_params)
            index = len(batches) - 1
            if len(stats.keys) == recorded:  # a skipped batch, a custom output
                losses.add(index, step["loss"].detach().float().reshape(1))
            batch_size = (
                get_len(batch[0]) if isinstance(batch, tuple | list) else get_len(batch)
            )
            batches[index][prefix + "_batch_size"] = batch_size
            self.notify("on_batch_end", batch=batch, training=training, **step)
            count += 1
            return step

        try:
            yield run_batch
        finally:
            self._epoch_stats, self._epoch_batches = None, []
            for index, (loss,) in losses.read():
                batches[index][prefix + "_loss"] = loss
            for (index, kind), values in stats.read():
                self._record_terms(kind, values, batch=batches[index])
                batches[index][prefix + "_loss"] = values[-1]
        self.history.record(prefix + "_batch_count", count)

    def _nonfinite_loss(self, total: float, terms: dict[str, float]) -> Tensor:
        """Stop (or skip the batch) before a non-finite loss reaches the weights."""
        epoch = len(self.history)
        batch = len(self.history[-1]["batches"]) if self.history else 0
        culprits = {
            name: value for name, value in terms.items() if not math.isfinite(value)
        }
        what = (
            ", ".join(f"{name} = {value}" for name, value in culprits.items())
            or "each term is finite but their weighted sum is not"
        )
        where = f"at epoch {epoch}, batch {batch} ({what})"
        if self.nonfinite_loss == "skip":
            warnings.warn(
                f"Skipped a training batch whose loss is {total} {where}.",
                RuntimeWarning,
                stacklevel=2,
            )
            # a leaf with no parameters behind it: backward leaves every
            # gradient empty, and the optimizer step changes nothing
            return torch.zeros((), device=self._compute_device(), requires_grad=True)
        raise NonFiniteLossError(
            f"The training loss became {total} {where}. The weights are those "
            "after the last finite step, and the estimator stays usable. Lower lr, "
            "check the inputs, or pass nonfinite_loss='skip' to skip such batches."
        )

    # ----------------------------------------------------------- prediction
    def evaluation_step(self, batch: Any, training: bool = False) -> Tensor:
        """The student's logits alone: prediction never runs the teacher."""
        self.check_is_fitted()
        Xi, _ = unpack_data(batch)
        with (
            torch.set_grad_enabled(training),
            autocast(self.device, self.mixed_precision),
        ):
            self._set_training(training)
            output = self.module_(self._as_input(to_tensor(Xi, device=self.device)))
            logits = logits_of(output, network="student")
        return logits.float()

    def _get_predict_nonlinearity(self) -> Any:
        if self.predict_nonlinearity == "auto":
            self.check_is_fitted()
            return _softmax
        return super()._get_predict_nonlinearity()

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities of the student, columns in the order of ``classes_``.

        Parameters
        ----------
        X : array-like, torch.Tensor or Dataset

        Returns
        -------
        proba : ndarray of shape (N, n_classes)
        """
        return super().predict_proba(self._check_predict_input(X))

    def predict(self, X: Any) -> np.ndarray:
        """The student's predicted labels (values of ``classes_``).

        Parameters
        ----------
        X : array-like, torch.Tensor or Dataset

        Returns
        -------
        labels : ndarray of shape (N,)
        """
        proba = self.predict_proba(X)  # raises NotFittedError before fit
        return np.asarray(self.classes_)[proba.argmax(axis=1)]

    def transform(self, X: Any) -> np.ndarray:
        """The student's penultimate features.

        Parameters
        ----------
        X : array-like, torch.Tensor or Dataset

        Returns
        -------
        features : ndarray of shape (N, D)
            ``D`` is ``n_student_features_``.
        """
        return self._features(X, teacher=False)

    def transform_teacher(self, X: Any) -> np.ndarray:
        """The teacher's penultimate features (e.g. for CKA against :meth:`transform`).

        Parameters
        ----------
        X : array-like, torch.Tensor or Dataset

        Returns
        -------
        features : ndarray of shape (N, D)
            ``D`` is ``n_teacher_features_``.
        """
        return self._features(X, teacher=True)

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """Fit, then return the student's penultimate features of ``X``."""
        return self.fit(X, y, **fit_params).transform(X)

    def _check_predict_input(self, X: Any) -> Any:
        """scikit-learn's NotFittedError before fit; then ``X`` checked against
        the samples seen by ``fit``."""
        check_is_fitted(self)
        X = check_input(X)
        check_input_shape(X, getattr(self, "input_shape_", None), type(self).__name__)
        return X

    def predict_proba_teacher(self, X: Any) -> np.ndarray:
        """The teacher's class probabilities (e.g. to compare its calibration).

        Parameters
        ----------
        X : array-like, torch.Tensor or Dataset

        Returns
        -------
        proba : ndarray of shape (N, n_classes)
        """
        return self._features(X, teacher=True, logits=True)

    def _features(self, X: Any, *, teacher: bool, logits: bool = False) -> np.ndarray:
        X = self._check_predict_input(X)
        model = self.teacher_ if teacher else self.module_
        layer = self.teacher_layer if teacher else self.student_layer
        self._set_training(False)
        iterator = self.get_iterator(self.get_dataset(X), training=False)
        chunks = []
        with torch.no_grad():
            for batch in iterator:
                Xi, _ = unpack_data(batch)
                outputs = forward_with_features(
                    model, to_tensor(Xi, device=self.device), layer=layer
                )
                chunk = _softmax(outputs[0]) if logits else outputs[1]
                chunks.append(to_numpy(chunk))
        return np.concatenate(chunks)


def _takes_argument(factory: Any, name: str) -> bool:
    """Whether ``factory``'s signature names ``name`` (not just ``**kwargs``)."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no signature to read (some builtins)
        return False
    parameter = parameters.get(name)
    return parameter is not None and parameter.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


def _name(value: Any) -> str:
    return getattr(value, "__qualname__", None) or repr(value)


def _preview(values: Any, n: int = 5) -> str:
    values = list(values)
    shown = ", ".join(map(str, values[:n]))
    return shown + (", ..." if len(values) > n else "")
