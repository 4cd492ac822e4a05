"""Many GPUs and nodes: data-parallel distillation through Hugging Face Accelerate.

:class:`AcceleratedProjectorDistiller` is :class:`~projkd.ProjectorDistiller`
with skorch's :class:`~skorch.hf.AccelerateMixin`, made to train correctly in
several processes (``torchrun`` or ``accelerate launch``, one process per
GPU, or CPU processes over gloo):

- Only modules with trainable parameters (the student, the projectors, a
  learned logit projector) are prepared, i.e. wrapped in DDP; criteria and
  parameter-less modules (the identity logit projector, a 0-projector
  ensemble) are moved to the device, and the frozen teacher never leaves
  plain eval-mode inference.
- ``batch_size`` is **per process**, as in PyTorch DDP and Accelerate: the
  global batch is ``batch_size * world_size``. Every process draws the same
  shuffled order and trains on its slice of each global batch (array input
  keeps projkd's sliced batches and teacher cache); DDP averages the
  gradients, so ``N`` processes with ``batch_size=b`` take the steps of one
  process with ``batch_size=N * b`` (exactly so for a network without
  BatchNorm; ``sync_batchnorm=True`` for BatchNorm networks on GPUs).
- The history's training losses and accuracies are those of the global
  batches (each process's batch records are gathered at the end of every
  epoch); validation and prediction run the whole data on every process,
  so each gets the full answer.
- Only the main process writes checkpoints (``save_params``); use
  :func:`is_main_process` to guard results and plots.
- Precision and compilation are the accelerator's
  (``Accelerator(mixed_precision="bf16", dynamo_backend="inductor")``): the
  estimator's own ``mixed_precision`` and ``compile`` are refused, so that
  one engine decides them. ``channels_last`` and ``data_device`` work as in
  one process.

:class:`DataParallelMixin` holds all of this for any skorch net; the
command line trains its teachers with it too.

Launch a script that fits one on 4 GPUs of one machine with
``torchrun --nproc_per_node 4 train.py`` or
``accelerate launch --num_processes 4 train.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from itertools import zip_longest
from numbers import Integral
from typing import Any

import torch
from skorch.hf import AccelerateMixin
from torch import Tensor, nn

from ._distributed import (
    FeatureModule,
    OnDevice,
    ShardedArrayBatches,
    all_gather_objects,
    broadcast_buffers,
    broadcast_object,
    is_main_process,
    process_index,
    world_size,
)
from .batching import ArrayBatches
from .distiller import ProjectorDistiller
from .features import forward_with_features

__all__ = [
    "AcceleratedProjectorDistiller",
    "DataParallelMixin",
    "is_main_process",
    "make_distiller",
    "process_index",
    "world_size",
]


def _trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


class DataParallelMixin(AccelerateMixin):
    """skorch's :class:`~skorch.hf.AccelerateMixin`, made to train correctly in
    several processes.

    Mix it in before a skorch net class (``class Net(DataParallelMixin,
    NeuralNetClassifier)``). Only modules with trainable parameters are
    wrapped in DDP; the others and the criteria are moved to the device.
    Training batches of arrays (projkd's :class:`~projkd.batching.ArrayBatches`)
    are sharded per process with one shuffled order for all; a ``Dataset``
    goes through Accelerate's sharded ``DataLoader``. The history's training
    records are gathered across processes at each epoch's end; evaluation runs
    the whole data on every process with the bare networks; only the main
    process saves.

    Parameters
    ----------
    *args, **kwargs
        As for the net class and :class:`~skorch.hf.AccelerateMixin`
        (``accelerator`` is required; leave ``device=None``).
    sync_batchnorm : bool, default=False
        With several processes, turn the trained networks' BatchNorm layers
        into :class:`torch.nn.SyncBatchNorm`, so that batch statistics are
        those of the global batch. torch supports it on GPUs only.
    """

    def __init__(self, *args: Any, sync_batchnorm: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sync_batchnorm = sync_batchnorm

    def _compute_device(self) -> Any:
        return self.accelerator.device

    def _feature_layer(self, name: str) -> str | None:
        """The layer whose output is the features of module ``name`` (None:
        the network's own ``forward_features`` or last layer)."""
        return None

    def _check_accelerated_params(self) -> None:
        """Refuse settings that belong to the accelerator, before training."""
        for name in ("mixed_precision", "compile"):
            value = getattr(self, name, None)
            engine = (
                f"Accelerator(mixed_precision={value!r})"
                if name == "mixed_precision"
                else 'Accelerator(dynamo_backend="inductor")'
            )
            if value not in (None, False):
                raise ValueError(
                    f"{type(self).__name__}(..., {name}={value!r}): with an "
                    f"accelerator, set this on it instead, e.g. {engine}, and leave "
                    f"{name} at its default. The accelerator then applies it to the "
                    "DDP-wrapped networks of every process."
                )

    def initialize(self) -> Any:
        self._check_accelerated_params()
        return super().initialize()

    # ---------------------------------------------------------- preparation
    def _initialize_accelerator(self) -> DataParallelMixin:
        """Prepare the modules that train; move the others to the device.

        DDP refuses modules without trainable parameters, and a criterion or
        an identity has no gradients to synchronise. Each trainable module
        is wrapped in :class:`~projkd._distributed.FeatureModule` first, so
        that a student's features come out of DDP's own forward pass.
        Idempotent: modules already prepared are left alone.
        """
        accelerator = self.accelerator
        prepared: dict[str, tuple[nn.Module, nn.Module]]
        prepared = self.__dict__.setdefault("_prepared_modules_", {})
        for name in self._criteria:
            criterion = getattr(self, name + "_")
            if isinstance(criterion, nn.Module):
                setattr(self, name + "_", criterion.to(accelerator.device))
        for name in self._modules:
            module = getattr(self, name + "_")
            if not isinstance(module, nn.Module) or (
                name in prepared and prepared[name][0] is module
            ):
                continue
            if not _trainable(module):
                setattr(self, name + "_", module.to(accelerator.device))
                continue
            if self.sync_batchnorm and accelerator.num_processes > 1:
                # shares the parameters (the optimizer's) and the buffers
                module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
            layer = self._feature_layer(name)
            wrapped = accelerator.prepare(FeatureModule(module, layer))
            prepared[name] = (wrapped, module)
            setattr(self, name + "_", wrapped)
        from accelerate.optimizer import AcceleratedOptimizer

        for name in self._optimizers:
            optimizer = getattr(self, name + "_")
            if isinstance(optimizer, torch.optim.Optimizer) and not isinstance(
                optimizer, AcceleratedOptimizer
            ):
                setattr(self, name + "_", accelerator.prepare(optimizer))
        self._wrapped_with_accelerator = True
        return self

    def _unwrap_accelerator(self) -> None:
        """Put the bare networks back (DDP, compilation and wrappers gone).

        The accelerator's own references to this estimator's wrappers,
        optimizers and data loaders are dropped too, so that an accelerator
        shared by many fits (``projkd reproduce``) does not keep every
        finished run's networks, gradients and optimizer state alive.
        """
        prepared = self.__dict__.get("_prepared_modules_", {})
        for name, (wrapped, bare) in prepared.items():
            if getattr(self, name + "_", None) is wrapped:
                self.accelerator.unwrap_model(wrapped, keep_fp32_wrapper=False)
                setattr(self, name + "_", bare)
        self._forget("_models", [wrapped for wrapped, _ in prepared.values()])
        self._forget("_optimizers", [getattr(self, n + "_") for n in self._optimizers])
        self._forget("_dataloaders", self.__dict__.pop("_prepared_loaders_", []))
        prepared.clear()
        self._wrapped_with_accelerator = False

    def _forget(self, attribute: str, objects: list[Any]) -> None:
        """Drop ``objects`` from the accelerator's list ``attribute``."""
        held = getattr(self.accelerator, attribute, None)
        if isinstance(held, list):
            held[:] = [item for item in held if not any(item is o for o in objects)]

    @contextmanager
    def _bare_modules(self) -> Iterator[None]:
        """The bare networks in place of the prepared ones, for a while."""
        prepared = dict(self.__dict__.get("_prepared_modules_", {}))
        current = {name: getattr(self, name + "_") for name in prepared}
        try:
            for name, (wrapped, bare) in prepared.items():
                if current[name] is wrapped:
                    setattr(self, name + "_", bare)
            yield
        finally:
            for name, module in current.items():
                setattr(self, name + "_", module)

    def _validate_params(self) -> None:
        super()._validate_params()
        if (
            self.sync_batchnorm
            and self.accelerator.num_processes > 1
            and self.accelerator.device.type == "cpu"
        ):
            raise ValueError(
                "sync_batchnorm=True needs GPUs: torch's SyncBatchNorm refuses CPU "
                "tensors. Use sync_batchnorm=False (each process then normalises "
                "with its own shard's statistics)."
            )

    # ------------------------------------------------------------- training
    def on_train_begin(self, net: Any, X: Any = None, y: Any = None, **kwargs: Any):
        # a later fit (warm_start, partial_fit) trains prepared modules again
        self._initialize_accelerator()
        seed = None
        if self.accelerator.num_processes > 1 and not isinstance(
            getattr(self, "random_state", None), Integral
        ):
            # one shuffled order for all processes, even without random_state
            seed = broadcast_object(int(torch.randint(2**31 - 1, ()).item()))
        self._shared_seed_ = seed
        return super().on_train_begin(net, X=X, y=y, **kwargs)

    def train_step(self, batch: Any, **fit_params: Any) -> dict[str, Any]:
        # gradient accumulation must skip the sync of every prepared module
        prepared = [w for w, _ in self.__dict__.get("_prepared_modules_", {}).values()]
        with self.accelerator.accumulate(*prepared):
            return super(AccelerateMixin, self).train_step(batch, **fit_params)

    def get_iterator(self, dataset: Any, training: bool = False) -> Any:
        """Training batches: this process's shard; otherwise the whole data.

        Arrays keep projkd's sliced batches (and the teacher cache) and are
        sharded here; any other dataset goes through skorch's ``DataLoader``,
        which the accelerator shards for training.
        """
        iterator = super(AccelerateMixin, self).get_iterator(dataset, training)
        device = self.accelerator.device
        if isinstance(iterator, ArrayBatches):
            if iterator.seed is None:
                iterator.seed = getattr(self, "_shared_seed_", None)
            if training:
                iterator = ShardedArrayBatches(
                    iterator,
                    num_replicas=self.accelerator.num_processes,
                    rank=self.accelerator.process_index,
                )
                self._own_random_stream()
            return OnDevice(iterator, device)
        if training:  # one prepared loader per epoch: forget the last one
            self._forget("_dataloaders", self.__dict__.pop("_prepared_loaders_", []))
            loader = self.accelerator.prepare(iterator)
            self.__dict__["_prepared_loaders_"] = [loader]
            return loader
        return OnDevice(iterator, device)

    def _own_random_stream(self) -> None:
        """Give this process its own random stream for the epoch's training.

        Every process draws the same seed for the epoch (``random_state``,
        :class:`~projkd.lockstep.EpochSeed`), so without this each process
        would draw the same augmentation and dropout for its slice as every
        other process does for its own: sample ``j`` of each slice would get
        the same crop and flip. The stream is reseeded from one draw of the
        current one plus the rank, so it stays reproducible. (Array batches
        only: their order comes from their own seed, whereas a sharded
        ``DataLoader``'s sampler takes torch's seed when it is prepared.)
        """
        ranks = self.accelerator.num_processes
        if ranks > 1:
            base = int(torch.randint(2**40, (), dtype=torch.int64).item())
            torch.manual_seed(base * ranks + self.accelerator.process_index)

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        """Gather the training batches of every process into the history, so
        that the epoch's losses and accuracies are over all samples."""
        if self.accelerator.num_processes > 1:
            epoch = self.history[-1]
            batches = epoch["batches"]
            train = [batch for batch in batches if "train_loss" in batch]
            rest = [batch for batch in batches if "train_loss" not in batch]
            gathered = all_gather_objects(train)
            merged = [
                batch
                for step in zip_longest(*gathered)
                for batch in step
                if batch is not None
            ]
            epoch["batches"] = merged + rest
        super().on_epoch_end(net, **kwargs)

    def on_train_end(self, net: Any, X: Any = None, y: Any = None, **kwargs: Any):
        # leave every replica identical: the main process's buffers (BatchNorm
        # statistics), as DDP's next forward pass would have done
        for _, bare in self.__dict__.get("_prepared_modules_", {}).values():
            broadcast_buffers(bare)
        return super().on_train_end(net, X=X, y=y, **kwargs)

    # ----------------------------------------------------------- prediction
    def evaluation_step(self, batch: Any, training: bool = False) -> Tensor:
        """The network's output, from the bare network; every process runs the
        whole data, so nothing is gathered."""
        with self._bare_modules():
            return super(AccelerateMixin, self).evaluation_step(batch, training)

    # ---------------------------------------------------------- persistence
    def save_params(self, **kwargs: Any) -> None:
        """Save the bare networks' state, from the main process only."""
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            with self._bare_modules():
                super(AccelerateMixin, self).save_params(**kwargs)
        self.accelerator.wait_for_everyone()  # nobody reads a half-written file

    def load_params(self, **kwargs: Any) -> None:
        """Load into the bare networks (the prepared ones share their tensors)."""
        self.accelerator.wait_for_everyone()
        device: Any = getattr(self, "device", None)
        if device is None:  # map_location; load_state_dict copies in place
            setattr(self, "device", "cpu")  # noqa: B010
        try:
            with self._bare_modules():
                super(AccelerateMixin, self).load_params(**kwargs)
        finally:
            setattr(self, "device", device)  # noqa: B010

    def _initialize_callbacks(self) -> DataParallelMixin:
        # skorch's "auto" sink prints even with verbose=0; keep verbose=0 quiet
        sink: Any = getattr(self, "callbacks__print_log__sink", None)
        if sink == "auto" and not self.verbose:
            self.callbacks__print_log__sink = _silent
        super()._initialize_callbacks()
        return self


class AcceleratedProjectorDistiller(DataParallelMixin, ProjectorDistiller):
    """ProjectorDistiller trained data-parallel through an ``accelerate.Accelerator``.

    Parameters
    ----------
    teacher, student, **kwargs
        As for :class:`~projkd.ProjectorDistiller`. ``batch_size`` is per
        process: the global batch is ``batch_size * world_size``.
        ``mixed_precision`` and ``compile`` are the accelerator's
        (``Accelerator(mixed_precision=..., dynamo_backend=...)``) and must
        stay at their defaults here.
    accelerator : accelerate.Accelerator
        Decides devices, precision and the processes to train on; leave
        ``device=None``.
    sync_batchnorm : bool, default=False
        With several processes, turn the student's and projectors' BatchNorm
        layers into :class:`torch.nn.SyncBatchNorm`, so that batch statistics
        are those of the global batch. torch supports it on GPUs only.

    Notes
    -----
    The learning-rate schedule is not prepared by the accelerator: it steps
    per epoch (or per optimizer step) exactly as in a one-process run with
    the global batch. Validation and ``predict``/``score``/``transform``
    run the whole data on every process, with the unwrapped networks after
    ``fit``. A non-finite loss on one process stops that process only:
    ``nonfinite_loss="skip"`` is refused with several processes.
    Accelerated estimators cannot be pickled while wrapped; they are
    unwrapped after training (``unwrap_after_train=True``).

    Examples
    --------
    >>> from accelerate import Accelerator
    >>> from projkd.accelerate import AcceleratedProjectorDistiller
    >>> from projkd.models import DigitsCNN
    >>> est = AcceleratedProjectorDistiller(
    ...     DigitsCNN(width=8).eval(), DigitsCNN, accelerator=Accelerator(cpu=True),
    ...     max_epochs=1, verbose=0)
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: Any,
        *,
        accelerator: Any,
        sync_batchnorm: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            teacher,
            student,
            accelerator=accelerator,
            sync_batchnorm=sync_batchnorm,
            **kwargs,
        )

    def _feature_layer(self, name: str) -> str | None:
        return self.student_layer if name == "module" else None

    def _check_fast_settings(self, X: Any) -> None:
        self._check_accelerated_params()
        super()._check_fast_settings(X)

    def _validate_params(self) -> None:
        super()._validate_params()
        if self.nonfinite_loss == "skip" and self.accelerator.num_processes > 1:
            raise ValueError(
                "nonfinite_loss='skip' cannot work with several processes: a batch "
                "skipped on one process leaves the others waiting for its "
                "gradients. Use nonfinite_loss='raise'."
            )

    def get_loss(
        self, y_pred: Any, y_true: Any, X: Any = None, training: bool = False
    ) -> Tensor:
        """The distillation loss in float32, outside the accelerator's autocast
        (skorch's Accelerate step computes the loss inside it)."""
        with torch.autocast(self.accelerator.device.type, enabled=False):
            return super().get_loss(y_pred, y_true, X=X, training=training)

    def _student_forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and features from one call of the prepared student (DDP's
        forward, so gradients are synchronised)."""
        prepared = self.__dict__.get("_prepared_modules_", {})
        if "module" in prepared and self.module_ is prepared["module"][0]:
            return self.module_(x, features=True)
        return forward_with_features(self.module_, x, layer=self.student_layer)


def make_distiller(teacher: nn.Module, student: Any, **params: Any) -> Any:
    """A :class:`~projkd.ProjectorDistiller`, or its accelerated form when
    this process is one of several (``WORLD_SIZE > 1``).

    For scripts and command lines that run alike under ``python`` and under
    ``torchrun``/``accelerate launch``: with several processes the
    ``device`` parameter is dropped (the accelerator places each process on
    its GPU, or on the CPU when there is none) and ``batch_size`` stays per
    process.

    Parameters
    ----------
    teacher, student, **params
        As for :class:`~projkd.ProjectorDistiller`; ``accelerator=`` may be
        passed to use a configured ``accelerate.Accelerator``.

    Returns
    -------
    estimator : ProjectorDistiller or AcceleratedProjectorDistiller

    Examples
    --------
    >>> from projkd.accelerate import make_distiller
    >>> from projkd.models import DigitsCNN
    >>> type(make_distiller(DigitsCNN(width=8).eval(), DigitsCNN)).__name__
    'ProjectorDistiller'
    """
    accelerator = params.pop("accelerator", None)
    if accelerator is None and world_size() <= 1:
        return ProjectorDistiller(teacher, student, **params)
    if accelerator is None:
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=not torch.cuda.is_available())
    params.pop("device", None)
    return AcceleratedProjectorDistiller(
        teacher, student, accelerator=accelerator, **params
    )


def _silent(*args: Any, **kwargs: Any) -> None:
    """A print sink that prints nothing."""
