"""Many GPUs and nodes through skorch's Hugging Face Accelerate integration.

:class:`AcceleratedProjectorDistiller` is :class:`~projkd.ProjectorDistiller`
with :class:`skorch.hf.AccelerateMixin`: mixed precision, gradient
accumulation and data-parallel training over processes started by
``accelerate launch``. Only the student and the projectors are prepared by
the accelerator (wrapped in DDP, compiled if asked); the frozen teacher is
not a skorch module, so it is never wrapped -- DDP refuses modules without
trainable parameters -- and runs as plain eval-mode inference on each
process's device.

Launch a script that fits one on 4 GPUs with::

    accelerate launch --num_processes 4 train.py

where ``train.py`` builds
``AcceleratedProjectorDistiller(teacher, student, accelerator=Accelerator(), ...)``.
"""

from __future__ import annotations

from typing import Any

from skorch import NeuralNet
from skorch.hf import AccelerateMixin

from .distiller import ProjectorDistiller

__all__ = ["AcceleratedProjectorDistiller"]


class AcceleratedProjectorDistiller(AccelerateMixin, ProjectorDistiller):
    """ProjectorDistiller trained through an ``accelerate.Accelerator``.

    Parameters
    ----------
    teacher, student, **kwargs
        As for :class:`~projkd.ProjectorDistiller`.
    accelerator : accelerate.Accelerator
        Decides devices, precision and the processes to train on; leave
        ``device=None``.

    Notes
    -----
    Batches always come from a ``DataLoader`` here (the accelerator shards
    it across processes), not from projkd's sliced-array iterator. Accelerated
    estimators cannot be pickled while wrapped; skorch unwraps them after
    training (``unwrap_after_train=True``).

    Examples
    --------
    >>> from accelerate import Accelerator
    >>> from projkd.accelerate import AcceleratedProjectorDistiller
    >>> from projkd.models import DigitsCNN
    >>> est = AcceleratedProjectorDistiller(
    ...     DigitsCNN(width=8).eval(), DigitsCNN, accelerator=Accelerator(cpu=True),
    ...     max_epochs=1, verbose=0)
    """

    def _compute_device(self) -> Any:
        return self.accelerator.device

    def get_iterator(self, dataset: Any, training: bool = False) -> Any:
        # skorch's DataLoader, so that the accelerator can shard and place batches
        iterator = NeuralNet.get_iterator(self, dataset, training=training)
        return self.accelerator.prepare(iterator)

    def _initialize_callbacks(self) -> AcceleratedProjectorDistiller:
        # skorch's "auto" sink prints even with verbose=0; keep verbose=0 quiet
        sink: Any = getattr(self, "callbacks__print_log__sink", None)
        if sink == "auto" and not self.verbose:
            self.callbacks__print_log__sink = _silent
        super()._initialize_callbacks()
        return self


def _silent(*args: Any, **kwargs: Any) -> None:
    """A print sink that prints nothing."""
