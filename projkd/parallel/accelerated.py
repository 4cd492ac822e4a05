"""Many GPUs and nodes: data-parallel distillation through Hugging Face Accelerate.

:class:`AcceleratedProjectorDistiller` is :class:`~projkd.ProjectorDistiller`
trained through an ``accelerate.Accelerator`` (as skorch's
:class:`~skorch.hf.AccelerateMixin` does, but correctly in several processes:
``torchrun`` or ``accelerate launch``, one process per GPU, or CPU processes
over gloo):

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

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..distiller import ProjectorDistiller
from .mixin import DataParallelMixin
from .process import world_size

__all__ = ["AcceleratedProjectorDistiller", "make_distiller"]


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
    >>> from projkd.parallel import AcceleratedProjectorDistiller
    >>> from projkd.models import DigitsCNN
    >>> est = AcceleratedProjectorDistiller(
    ...     DigitsCNN(width=8).eval(), DigitsCNN, accelerator=Accelerator(cpu=True),
    ...     max_epochs=1, verbose=0)
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **ProjectorDistiller._parameter_constraints,
        "sync_batchnorm": ["boolean"],
        "unwrap_after_train": ["boolean"],
    }

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

    def _hint_layers(self, name: str) -> tuple[str, ...]:
        return self.hint_names("student") if name == "module" else ()

    def _check_fast_settings(self, X: Any) -> None:
        # before a teacher estimator is fitted or anything is built
        self._check_parallel_params()
        super()._check_fast_settings(X)

    def get_loss(
        self, y_pred: Any, y_true: Any, X: Any = None, training: bool = False
    ) -> Tensor:
        """The distillation loss in float32, outside the accelerator's autocast
        (skorch's Accelerate step computes the loss inside it)."""
        with torch.autocast(self.accelerator.device.type, enabled=False):
            return super().get_loss(y_pred, y_true, X=X, training=training)

    def _student_forward(
        self, x: Any, **fit_params: Any
    ) -> tuple[Any, Tensor, tuple[Tensor, ...]]:
        """Output, features and hint maps from one call of the prepared
        student (DDP's forward, so gradients are synchronised)."""
        prepared = self._prepared_modules_
        if "module" in prepared and self.module_ is prepared["module"][0]:
            return self.module_(x, features=True, **fit_params)
        return super()._student_forward(x, **fit_params)


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
    >>> from projkd.parallel import make_distiller
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
