"""ProjectorDistiller: projector-ensemble knowledge distillation as an estimator."""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
from sklearn.utils import TransformerTags
from skorch import NeuralNetClassifier
from skorch.callbacks import EpochTimer, PassthroughScoring, PrintLog
from skorch.utils import is_dataset
from torch import nn

from .estimator.data import ArrayDataMixin
from .estimator.labels import encode_labels, label_space
from .estimator.networks import NetworksMixin
from .estimator.params import COMPONENTS, ParamsMixin
from .estimator.prediction import PredictionMixin
from .estimator.validation import (
    DISTILLER_CONSTRAINTS,
    check_fast_settings,
    check_fit_data,
    check_input_shape,
    check_params,
)
from .features import first_inputs
from .losses import logit_loss_terms, resolve_feature_loss, resolve_logit_loss
from .projectors import HintProjectors
from .training.batching import DistillationOutput
from .training.device import cudnn_benchmark
from .training.finite import FiniteStepMixin, NonFiniteLossError
from .training.graphs import GraphStepMixin
from .training.precision import ScaledStepMixin
from .training.records import DeviceRecordsMixin
from .training.steps import LOSS_TERMS, DistillationStepMixin
from .utils import seeded

__all__ = ["DistillationOutput", "NonFiniteLossError", "ProjectorDistiller"]


class ProjectorDistiller(
    ParamsMixin,
    NetworksMixin,
    DistillationStepMixin,
    GraphStepMixin,
    PredictionMixin,
    FiniteStepMixin,
    ScaledStepMixin,
    DeviceRecordsMixin,
    ArrayDataMixin,
    NeuralNetClassifier,
):
    """Distil a frozen teacher into a student through an ensemble of projectors.

    The student is trained on
    ``ce_weight * CE + kd_weight * KD + feature_weight * (1 - cos(f(s), t))``
    where ``s`` and ``t`` are the student's and teacher's penultimate features
    and ``f`` is the mean of ``n_projectors`` independently initialised
    projectors. Projectors train with the student in one optimizer and are
    dropped at prediction time: ``predict``, ``predict_proba`` and ``score``
    run the student alone. A term whose weight is 0 is not computed (a fit
    with ``kd_weight = feature_weight = 0`` never runs the teacher).

    A subclass of skorch's :class:`~skorch.NeuralNetClassifier`: every skorch
    parameter, the history, checkpoints and ``save_params``/``load_params``
    work unchanged, and the estimator is a scikit-learn classifier for
    ``clone``, ``GridSearchCV``, ``Pipeline`` and ``cross_val_score``. The
    user guide describes each parameter at length.

    Parameters
    ----------
    teacher : torch.nn.Module or estimator
        The pretrained teacher, frozen (no gradients, eval mode, never in the
        optimizer) and never modified; a copy is used unless it already is
        in eval mode on ``device``. Its output ``i`` means ``classes_[i]``. An
        unfitted skorch net is fitted on the training fold of each fit.
    student : torch.nn.Module class, factory callable or instance
        The network to train. A class or factory is called inside ``fit``,
        under ``random_state``, with the ``student__*`` parameters (and
        ``num_classes`` from the teacher when it takes it); an instance is
        deep-copied.
    n_projectors : int, default=3
        Projectors in the ensemble; ``0`` compares the features directly
        (their widths must then be equal).
    projector : {"linear", "mlp"} or callable, default="linear"
        ``Linear(d_s, d_t) + ReLU``, ``Linear - BatchNorm - ReLU - Linear``,
        or a callable ``(d_s, d_t) -> nn.Module``.
    feature_weight : float, default=25.0
        Weight of the feature term, by default ``1 - cos(f(s), t)``; with 0
        no projector is built.
    feature_loss : {"cosine", "srd"}, FeatureLoss, class or callable, default="cosine"
        The feature term between the projected student features and the
        teacher's: PEFD's ``1 - cos`` (:class:`~projkd.losses.CosineLoss`),
        or the normalised distance of Miles & Mikolajczyk
        (:class:`~projkd.losses.SRDLoss`, ``log sum |BN(f(s)) - BN(t)|^4``
        with batch statistics); a class (built with the
        ``feature_loss__*`` options), a loss object (options set on a copy),
        or a callable ``(projected, teacher_features) -> loss``, tried on a
        small batch before training. ``n_projectors`` and ``projector``
        apply to either.
    kd_weight : float, default=0.0
        Weight of the logit term: ``logit_loss``, by default KD,
        ``T^2 KL(softmax(z_t/T) || softmax(z_s/T))``.
    ce_weight : float, default=1.0
        Weight of the cross-entropy term.
    temperature : float, default=4.0
        The temperature ``T`` of the logit loss, whichever it is.
    logit_loss : {"kd", "dkd", "dist"}, LogitLoss, class or callable, default="kd"
        The logit term: :class:`~projkd.losses.KDLoss`, ``DKDLoss``,
        ``DISTLoss``; a class, built with the ``logit_loss__*`` options (as
        skorch builds its criterion); or a callable such as a
        ``torch.nn.Module``, ``(student_logits, teacher_logits, y) -> (loss,
        terms)``, given ``temperature=`` when it takes it and tried on a small
        batch before training. The ``logit_loss__*`` options are parameters
        of the estimator: the arguments of a shortcut or class, or set on a
        copy of a loss object (never on the object itself). A loss other
        than KD needs ``kd_weight > 0``.
    logit_projector : bool, default=False
        Compute the logit term on a learned ``Linear(C, C)`` of the student's
        logits; predictions use the raw logits.
    logit_projector_init : {"identity", "default"}, default="identity"
        ``W = I, b = 0``, or PyTorch's random init (as the reference code).
    teacher_layer, student_layer : str or None, default=None
        The module whose (average-pooled) output is the network's feature;
        ``None`` uses ``forward_features``/``forward_head``, else the input
        of the last ``nn.Linear``.
    hint_layers : list of (str, str) or None, default=None
        Hints at several layers (FitNet's, PEFD's at each stage): pairs of a
        student module and a teacher module, by name, e.g.
        ``[("layer2", "layer2"), ("layer3", "layer3")]``. Each pair's maps,
        read in the same forward pass as the features, are compared at each
        position (the student's map pooled to the teacher's positions)
        through an ensemble of ``n_projectors`` 1x1-convolution projectors
        of its own (``Linear(C_s, C_t) + ReLU`` on each position's
        channels, averaged). The teacher cache is off with hints.
    hint_weight : float, default=1.0
        Weight of the hint term, the mean over the pairs of
        :func:`~projkd.losses.hint_loss` (``train_hint`` in the history).
    hint_loss : {"cosine", "mse"}, default="cosine"
        PEFD's ``1 - cos`` per position, or FitNet's mean squared error.
    cache_teacher : {"auto"} or bool, default="auto"
        Compute the teacher's outputs once per sample and look them up
        (``"auto"``: for array input without ``train_transform``); shared by
        every estimator holding the same teacher in the same state, bounded
        by :func:`projkd.teacher.set_teacher_cache_limit`.
    memory : str, joblib.Memory or None, default=None
        Keep the teacher's outputs in this joblib cache instead of in memory.
    nonfinite_loss : {"raise", "skip"}, default="raise"
        A NaN or infinite training loss raises :class:`NonFiniteLossError`
        (naming the epoch, batch and term; the weights stay the last finite
        ones) or, with ``"skip"``, warns and skips the batch, which is left
        out of the epoch's means and counted in ``train_skipped``; decided on
        the device by a fused optimizer (:mod:`projkd.training.finite`).
    train_transform : callable or None, default=None
        Augmentation of each training batch on ``device``, e.g.
        :class:`projkd.augment.RandomCropFlip`; the teacher sees the same view.
    random_state : int, RandomState instance or None, default=None
        Seeds what ``fit`` builds and draws (initialisation, shuffling,
        dropout); torch's global generators are restored afterwards.
    mixed_precision : {None, "bf16", "fp16"}, default=None
        Autocast the networks at this precision (loss terms in float32;
        ``"fp16"`` scales the loss with a :class:`torch.amp.GradScaler`).
    channels_last : bool, default=False
        Keep the networks and image batches in ``torch.channels_last``.
    data_device : {"auto"} or str or torch.device, default="auto"
        Where array input lives during ``fit``; ``"auto"``: on an accelerator
        when the arrays take under
        :data:`projkd.training.device.DEVICE_MEMORY_FRACTION` of its free
        memory, else on the host (copied one batch ahead).
    compile : bool, default=False
        skorch's parameter: compile with :func:`torch.compile` and the
        ``compile__*`` parameters. The training step's forward -- the
        student's forward with its features, the projectors, the loss and the
        batch statistics -- is one graph with its AOT backward (one per batch
        shape: ``dynamic=False`` unless ``compile__dynamic`` is given), which
        ``compile__mode="reduce-overhead"`` replays as CUDA graphs; the
        optimizer's step and the callbacks stay outside it, and changing
        loss weights (DKD's warm-up) and learning rates recompile nothing
        (:mod:`projkd.training.graphs`). The uncached teacher and the
        student's evaluation forward are compiled on their own.
    criterion : torch criterion class, default=torch.nn.CrossEntropyLoss
        The classification loss on the student's logits.
    predict_nonlinearity : callable, None or "auto", default="auto"
        skorch's: ``"auto"`` applies softmax after a ``CrossEntropyLoss``
        (the default) and nothing after ``NLLLoss``, whose student outputs
        probabilities (the distillation terms then read ``log(p)``).
    **kwargs
        Any other skorch parameter; ``student__*`` (or skorch's spelling,
        ``module__*``) go to the student.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The labels (``classes`` if given, else the sorted labels of ``y``;
        ``arange(n_classes)`` for a Dataset without ``y``).
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
        Per epoch: ``train_loss`` and its unweighted terms ``train_ce``,
        ``train_kd`` (the logit loss), ``train_feat`` (0 when switched off),
        the logit loss's parts (DKD: ``train_tckd``, ``train_nckd``; DIST:
        ``train_inter``, ``train_intra``), ``train_acc``, ``train_skipped``,
        ``valid_loss``, ``valid_acc``.

    Notes
    -----
    skorch's hooks see what skorch gives them: a batch is ``(X, y)``,
    ``infer`` returns the student's output (``y_pred`` of scorers,
    callbacks and ``get_loss``), and the history's batch rows can be read
    during the epoch. What distillation adds travels beside them: every
    callback's ``on_batch_end`` receives the step's
    :class:`~projkd.DistillationOutput` as the keyword ``distillation``
    (:mod:`projkd.training.steps`). ``fit`` params go to the student's
    forward (to ``forward_features`` for a network read through it).
    Changing a parameter the networks are built from (the student, the
    teacher, the layers, the projectors) on an initialised estimator
    re-initialises them, as a module parameter does in skorch
    (:mod:`projkd.estimator.params`). skorch's own test suite runs on this
    class in ``tests/skorch_suite``.

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

    # The teacher, the student, the logit loss and the train transform are
    # parameters with options (``student__*``, ...), not skorch components:
    # listed as prefixes, their options pass skorch's checks, and the frozen
    # teacher_ stays out of skorch's module handling (train mode, optimizer,
    # device moves, compilation), which is exactly what frozen means.
    # set_params routes them (NetworksMixin.set_params).
    prefixes_ = NeuralNetClassifier.prefixes_ + [*COMPONENTS]
    # pickled through skorch's torch unpickler, so that ``map_location`` (a
    # model saved on a GPU, loaded on a CPU-only host) reaches them too
    cuda_dependent_attributes_ = NeuralNetClassifier.cuda_dependent_attributes_ + [
        *COMPONENTS,
        "train_transform",
        "_sample_input_",
    ]
    # the functions built for the networks, dropped when pickled
    _FORWARDS = (*NetworksMixin._FORWARDS, GraphStepMixin._GRAPH)
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
        feature_loss: Any = "cosine",
        kd_weight: float = 0.0,
        ce_weight: float = 1.0,
        temperature: float = 4.0,
        logit_loss: Any = "kd",
        logit_projector: bool = False,
        logit_projector_init: str = "identity",
        teacher_layer: str | None = None,
        student_layer: str | None = None,
        hint_layers: Any = None,
        hint_weight: float = 1.0,
        hint_loss: str = "cosine",
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
        self.feature_loss = feature_loss
        self.kd_weight = kd_weight
        self.ce_weight = ce_weight
        self.temperature = temperature
        self.logit_loss = logit_loss
        self.logit_projector = logit_projector
        self.logit_projector_init = logit_projector_init
        self.teacher_layer = teacher_layer
        self.student_layer = student_layer
        self.hint_layers = hint_layers
        self.hint_weight = hint_weight
        self.hint_loss = hint_loss
        self.cache_teacher = cache_teacher
        self.memory = memory
        self.nonfinite_loss = nonfinite_loss
        self.train_transform = train_transform
        self.random_state = random_state
        self.mixed_precision = mixed_precision
        self.channels_last = channels_last
        self.data_device = data_device

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a parameter added since the estimator was pickled takes its default
        for name, parameter in inspect.signature(
            type(self).__init__
        ).parameters.items():
            if parameter.default is not inspect.Parameter.empty:
                state.setdefault(name, parameter.default)
        super().__setstate__(state)
        if self.initialized_ and "hint_projectors_" not in vars(self):
            self.__dict__["hint_projectors_"] = HintProjectors()  # no hints then

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
        terms = (
            *(t for t in LOSS_TERMS if t != "hint" or self.has_hints()),
            *logit_loss_terms(self.logit_loss),
        )
        train = ["train_loss", *(f"train_{t}" for t in terms), "train_acc"]
        scores = [
            (n, PassthroughScoring(n, lower_is_better=n[-3:] != "acc", on_train=t))
            for names, t in ((train, True), (["valid_loss", "valid_acc"], False))
            for n in names
        ]
        return [("epoch_timer", EpochTimer()), *scores, ("print_log", PrintLog())]

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any = None, **fit_params: Any) -> ProjectorDistiller:
        """Validate the input, then initialise and train the student.

        Parameters
        ----------
        X : array-like of shape (N, C, H, W) or (N, D), torch.Tensor or Dataset
            Inputs; arrays are used as float32. A ``Dataset`` yields
            ``(x, target)`` pairs with integer class-index targets; its
            ``targets`` (as torchvision's data sets have) serve as ``y``
            when ``y`` is None.
        y : array-like of shape (N,) or None
            Labels of any type scikit-learn accepts (integers, strings).
        **fit_params
            Passed to skorch's ``fit``: to ``train_split`` and to the
            student's forward.

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
        device = self._compute_device()
        with self._teacher_fitted(X, y, reset, fit_params), self._prepared():
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
        if self._fit_prepared:  # called by skorch's fit: prepared there
            return super().partial_fit(X, y, **fit_params)
        first = not self.initialized_
        X, y = self._prepare_fit(X, y, reset=first, classes=classes)
        device = self._compute_device()
        with self._teacher_fitted(X, y, first, fit_params), self._prepared():
            if first:
                with seeded(self.random_state, device):
                    self.initialize()  # networks built under the seed, as in fit
            with cudnn_benchmark(device):
                return super().partial_fit(X, y, **fit_params)

    _fit_prepared = False

    @contextmanager
    def _prepared(self) -> Iterator[None]:
        """The data of this fit are checked and encoded: skorch's ``fit``
        calls :meth:`partial_fit`, which must not do it again."""
        self._fit_prepared = True
        try:
            yield
        finally:
            del self._fit_prepared

    def initialize(self) -> ProjectorDistiller:
        """skorch's ``initialize``, after checking the parameters.

        Without data (before any fit), the networks' feature widths and
        outputs must be declared by the networks themselves (see
        :func:`~projkd.features.declared_widths`), as for skorch's recipe
        ``net.initialize(); net.load_params(...)``.
        """
        check_params(self)
        return super().initialize()

    def initialize_for(self, X: Any, y: Any) -> ProjectorDistiller:
        """Validate ``X, y`` and initialise for them as ``fit`` does before its
        first epoch (a teacher estimator fitted on them, the networks built
        under ``random_state``), without training; as
        :func:`~projkd.lockstep.fit_lockstep` starts its estimators.

        Returns
        -------
        self : ProjectorDistiller
        """
        X, y = self._prepare_fit(X, y, reset=True)
        with self._teacher_fitted(X, y, True, {}):
            with seeded(self.random_state, self._compute_device()):
                self.initialize()
        return self

    def _compute_device(self) -> Any:
        """Where the networks run (skorch's ``device``; None means the CPU)."""
        return self.device if self.device is not None else "cpu"

    def _prepare_fit(
        self, X: Any, y: Any, *, reset: bool, classes: Any = None
    ) -> tuple[Any, Any]:
        """Check the parameters and the data before any training; with
        ``reset``, remember what the data set implies (shapes, classes)."""
        check_params(self)
        self.resolve_losses()
        X, y = check_fit_data(self, X, y)
        if not reset:
            expected: tuple[int, ...] | None = getattr(self, "input_shape_", None)
            check_input_shape(X, expected, type(self).__name__)
            self._check_projectors()
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

    def resolve_losses(self) -> None:
        """Build the loss objects from the parameters (``logit_loss_``,
        ``feature_loss_``), as ``initialize_module`` and every fit do."""
        self.logit_loss_ = resolve_logit_loss(
            self.logit_loss,
            kd_weight=self.kd_weight,
            temperature=self.temperature,
            params=self.get_params_for("logit_loss"),
        )
        self.feature_loss_ = resolve_feature_loss(
            self.feature_loss, params=self.get_params_for("feature_loss")
        )

    def _encode(self, y: Any) -> np.ndarray:
        return encode_labels(y, self.classes_)

    def _check_fast_settings(self, X: Any) -> None:
        """Refuse speed settings that cannot work, before training."""
        check_fast_settings(self, X, self._compute_device())

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

    def uses_graph_step(self) -> bool:
        """Whether training steps run as one compiled graph
        (:mod:`projkd.training.graphs`): with ``compile=True``, unless a
        subclass replaces ``infer``, ``get_loss`` or the student's forward,
        which the graph would bypass (its steps then stay eager pieces,
        each network compiled on its own)."""
        cls = type(self)
        return bool(self.compile) and all(
            getattr(cls, name) is getattr(ProjectorDistiller, name)
            for name in ("infer", "get_loss", "_student_forward", "student_logits")
        )
