"""skorch callbacks that record calibration and CKA in the history per epoch."""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Any

import numpy as np
import torch
from skorch.callbacks import Callback, Checkpoint
from skorch.dataset import unpack_data

from .errors import UserError
from .features import logits_of
from .metrics._calibration import calibration_bins, calibration_error_from_bins
from .metrics._cka import MinibatchCKA
from .parallel.process import broadcast_object, writes_outputs
from .training.batching import DistillationOutput

__all__ = [
    "CheckpointError",
    "EpochCKA",
    "EpochCalibration",
    "ResumableCheckpoint",
    "fit_key",
]


class _BatchScore(Callback):
    """A score of the batches of one kind (``on_train``: training, else
    validation) that the net already computes, fed to :meth:`update`."""

    on_train: bool

    def on_batch_end(
        self,
        net: Any,
        batch: Any = None,
        training: bool = False,
        y_pred: Any = None,
        distillation: DistillationOutput | None = None,
        **kwargs: Any,
    ) -> None:
        if training == self.on_train:
            self.update(batch, y_pred, distillation)

    def update(
        self, batch: Any, y_pred: Any, distillation: DistillationOutput | None
    ) -> None:
        """Add one batch: skorch's ``batch`` and ``y_pred`` (the student's
        output), and the step's :class:`~projkd.DistillationOutput` (None
        for a net that is not a distiller)."""
        raise NotImplementedError


class EpochCalibration(_BatchScore):
    """Record the expected calibration error of each epoch's predictions.

    Streams over the batches the net already computes (no extra forward
    pass): bin sums are accumulated per batch and the ECE is recorded as
    ``name`` at the end of the epoch. Targets are the encoded class indices
    the net trains on.

    Parameters
    ----------
    name : str, default="valid_ece"
    on_train : bool, default=False
        Use the training batches (in train mode) instead of validation.
    n_bins : int, default=15
    norm : {"l1", "l2", "max"}, default="l1"

    Examples
    --------
    >>> from projkd.callbacks import EpochCalibration
    >>> callbacks = [EpochCalibration()]  # ProjectorDistiller(..., callbacks=callbacks)
    """

    def __init__(
        self,
        name: str = "valid_ece",
        on_train: bool = False,
        n_bins: int = 15,
        norm: str = "l1",
    ) -> None:
        self.name = name
        self.on_train = on_train
        self.n_bins = n_bins
        self.norm = norm

    def on_epoch_begin(self, net: Any, **kwargs: Any) -> None:
        self.bins_ = [np.zeros(self.n_bins) for _ in range(3)]

    def update(
        self, batch: Any, y_pred: Any, distillation: DistillationOutput | None
    ) -> None:
        """Add one batch's confidences and hits to the epoch's bins."""
        logits = logits_of(y_pred) if distillation is None else distillation.logits
        _, y = unpack_data(batch)
        proba = torch.softmax(logits.detach().float(), dim=1)
        confidence, predicted = proba.max(dim=1)
        correct = (predicted.cpu() == torch.as_tensor(y).cpu()).numpy()
        sums = calibration_bins(confidence.cpu().double().numpy(), correct, self.n_bins)
        for total, part in zip(self.bins_, sums, strict=True):
            total += part

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        count, confidence_sum, correct_sum = self.bins_
        if count.sum() > 0:
            error = calibration_error_from_bins(
                count, confidence_sum, correct_sum, self.norm
            )
            net.history.record(self.name, error)


class EpochCKA(_BatchScore):
    """Record the minibatch CKA between student and teacher features per epoch.

    Uses the features of the batches the net already computes and
    :class:`~projkd.metrics.MinibatchCKA` (batches under 4 samples are
    skipped), so it costs no extra forward pass. A fit that never runs the
    teacher (``kd_weight = feature_weight = 0``) has no teacher features and
    records nothing.

    Parameters
    ----------
    name : str, default="valid_cka"
    on_train : bool, default=False
        Use the training batches instead of validation.
    """

    def __init__(self, name: str = "valid_cka", on_train: bool = False) -> None:
        self.name = name
        self.on_train = on_train

    def on_epoch_begin(self, net: Any, **kwargs: Any) -> None:
        self.cka_ = MinibatchCKA()

    def update(
        self, batch: Any, y_pred: Any, distillation: DistillationOutput | None
    ) -> None:
        """Add one batch's student and teacher features to the epoch's CKA."""
        if distillation is None or distillation.teacher_features is None:
            return  # not a distiller, or a fit that never runs the teacher
        if len(distillation.features) >= 4:
            self.cka_.update(
                distillation.features.detach(), distillation.teacher_features
            )

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        if self.cka_.n_batches:
            net.history.record(self.name, self.cka_.compute())


class ResumableCheckpoint(Checkpoint):
    """Checkpoint every epoch; on the next fit of the same run, resume from it.

    Each run writes to its own folder, ``dirname/<key>``, where the key is a
    digest of the estimator's parameters (callbacks aside), its teacher's
    weights and the training data: the folds and candidates of a parallel
    search never collide, and re-running a crashed fit (or a whole search)
    with the same settings picks up each run where it stopped. The student,
    the projectors, the optimizer and the history are saved after every
    epoch; training stops once the history holds ``max_epochs`` epochs in
    all. With an integer ``random_state`` the resumed run reproduces the
    uninterrupted one (batch order depends on the epoch alone).

    Every file is written atomically: to a temporary file in the run's
    folder, then renamed over the previous one (the history last, as it
    marks the epoch done), so a process killed while saving leaves the
    previous epoch's files intact. With several processes
    (:class:`~projkd.parallel.AcceleratedProjectorDistiller`) only the main
    process writes. A file that still cannot be read at resume raises
    :class:`CheckpointError` naming the run's folder.

    Parameters
    ----------
    dirname : str, default="checkpoints"
    use_safetensors : bool, default=False
        Save and load with safetensors instead of ``torch.save`` (no optimizer
        state then). Loading always refuses pickled code.

    Examples
    --------
    >>> from projkd.callbacks import ResumableCheckpoint
    >>> callbacks = [ResumableCheckpoint(dirname="runs")]
    """

    def __init__(self, dirname: str = "checkpoints", use_safetensors: bool = False):
        super().__init__(
            monitor=None,
            dirname=dirname,
            f_criterion=None,
            use_safetensors=use_safetensors,
        )

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        # the parameters of this class, not all of skorch's Checkpoint
        return {"dirname": self.dirname, "use_safetensors": self.use_safetensors}

    def _f_kwargs(self) -> dict[str, Any]:
        return {
            **super()._f_kwargs(),
            "f_projectors": "projectors.pt",
            "f_logit_projector": "logit_projector.pt",
        }

    def on_train_begin(
        self, net: Any, X: Any = None, y: Any = None, **kwargs: Any
    ) -> None:
        # the main process's key: every process resumes and saves one run
        key = broadcast_object(fit_key(net, X, y))
        self.run_dirname_ = os.path.join(self.dirname, key)
        os.makedirs(self.run_dirname_, exist_ok=True)
        if os.path.exists(self.f_history_):
            try:
                net.load_params(checkpoint=self, use_safetensors=self.use_safetensors)
            except Exception as error:
                raise CheckpointError(
                    f"Cannot resume this run from its checkpoint folder "
                    f"{self.run_dirname_!r}: {self._diagnose(error)}. A file "
                    "in it is unreadable or does not fit this estimator. To start "
                    f"this run afresh, delete that folder (rm -r {self.run_dirname_})."
                ) from error

    def _diagnose(self, error: Exception) -> str:
        """What is wrong, in the words :func:`projkd.models.check_weights_file`
        uses for a broken file, else skorch's error."""
        from .models import check_weights_file

        for name in sorted(os.listdir(self.run_dirname_)):
            if name.endswith(".pt") and not name.startswith("."):
                try:
                    check_weights_file(os.path.join(self.run_dirname_, name))
                except ValueError as broken:
                    return str(broken).rstrip(".")
        return f"{type(error).__name__}: {error}"

    def save_model(self, net: Any) -> None:
        """Write every file to a temporary name in the run's folder, then
        rename them over the previous ones, the history last."""
        targets = {
            key: self._format_target(net, value, -1)
            for key, value in self._f_kwargs().items()
            if value is not None and key not in ("f_history", "f_pickle")
        }
        if self.f_history is not None:
            targets["f_history"] = self.f_history_
        temps = {name: _temporary_name(path) for name, path in targets.items()}
        try:
            net.save_params(**temps, use_safetensors=self.use_safetensors)
            if writes_outputs(net):
                for name in sorted(targets, key=lambda name: name == "f_history"):
                    os.replace(temps[name], targets[name])
        finally:
            for temp in temps.values():
                with contextlib.suppress(FileNotFoundError):
                    os.remove(temp)

    def on_epoch_begin(self, net: Any, **kwargs: Any) -> None:
        if len(net.history) > net.max_epochs:  # resumed after the last epoch
            del net.history[-1]
            raise KeyboardInterrupt  # skorch's way to end training early

    @property
    def f_history_(self) -> str:
        return os.path.join(self.run_dirname_, self.f_history)

    def _format_target(self, net: Any, f: Any, idx: int) -> Any:
        if not isinstance(f, str):
            return f
        return os.path.join(self.run_dirname_, f)


class CheckpointError(UserError, RuntimeError):
    """A run's checkpoint cannot be resumed from; the message names its folder
    and, for a broken file, what is wrong with it as
    :class:`projkd.models.WeightsFileError` says it."""


def _temporary_name(path: str) -> str:
    """A fresh name beside ``path``: a rename within one folder is atomic."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp")


def fit_key(net: Any, X: Any, y: Any) -> str:
    """A digest of what defines a run: parameters, teacher weights, data."""
    import joblib

    from .teacher.fingerprint import weights_fingerprint

    params = {
        name: value
        for name, value in net.get_params(deep=False).items()
        if name != "teacher" and not name.startswith("callbacks")
    }
    accelerator = params.pop("accelerator", None)
    if accelerator is not None:  # where the run trains; only how many matters
        params["accelerator"] = (
            getattr(accelerator, "num_processes", 1),
            str(getattr(accelerator, "mixed_precision", "no")),
        )
    teacher = getattr(net, "teacher", None)
    if isinstance(teacher, torch.nn.Module):
        teacher = weights_fingerprint(teacher)
    return joblib.hash((type(net).__name__, params, teacher, X, y))[:16]
