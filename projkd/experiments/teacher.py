"""``projkd train-teacher``: train a teacher with its data set's recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from skorch import NeuralNetClassifier
from skorch.dataset import unpack_data
from skorch.utils import to_tensor

from .._random import seeded
from ..parallel import DataParallelMixin
from ..teacher.inference import compute_teacher_outputs
from ..teacher.io import save_teacher
from ..training.device import to_channels_last
from ..training.precision import autocast, grad_scaler, scaled_step
from .data import load_data
from .io import save_json, write_results
from .launch import Launch
from .spec import RunSpec, build_model, speed_kwargs
from .tracking import best_epoch, run_callbacks

__all__ = ["AcceleratedTeacherNet", "TeacherNet", "train_teacher_run"]


class TeacherNet(NeuralNetClassifier):
    """A skorch classifier that augments its training batches on the device,
    for training teachers with the same crop + flip as distillation.

    Parameters
    ----------
    module, **kwargs
        As for :class:`skorch.NeuralNetClassifier`.
    criterion : torch criterion class, default=torch.nn.CrossEntropyLoss
        On the logits (skorch's default, ``NLLLoss``, expects probabilities).
    train_transform : callable or None, default=None
        Applied to each training batch on ``device`` (e.g.
        :class:`projkd.augment.RandomCropFlip`); never to evaluation.
    mixed_precision : {"bf16", "fp16"} or None, default=None
        Autocast the forward pass; logits and loss stay float32, and fp16
        scales the loss (``torch.amp.GradScaler``).
    channels_last : bool, default=False
        Keep the network and 4-D batches in ``torch.channels_last``.

    Notes
    -----
    Training batches are shuffled every epoch (``iterator_train__shuffle=True``
    unless told otherwise; skorch's default is not to shuffle).
    """

    prefixes_ = NeuralNetClassifier.prefixes_ + ["train_transform"]

    def __init__(
        self,
        module: Any,
        *args: Any,
        criterion: Any = torch.nn.CrossEntropyLoss,
        train_transform: Any = None,
        mixed_precision: str | None = None,
        channels_last: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("iterator_train__shuffle", True)  # SGD wants shuffling
        super().__init__(module, *args, criterion=criterion, **kwargs)
        self.train_transform = train_transform
        self.mixed_precision = mixed_precision
        self.channels_last = channels_last

    def initialize_module(self) -> TeacherNet:
        super().initialize_module()
        if self.channels_last:
            to_channels_last(self.module_)
        return self

    def infer(self, x: Any, **fit_params: Any) -> torch.Tensor:
        x = to_tensor(x, device=self.device)
        if self.train_transform is not None and self.module_.training:
            x = self.train_transform(x)
        if self.channels_last:
            x = to_channels_last(x)
        if self.mixed_precision is None:
            return self.module_(x, **fit_params)
        with autocast(x.device, self.mixed_precision):
            logits = self.module_(x, **fit_params)
        return logits.float()

    def train_step_single(self, batch: Any, **fit_params: Any) -> dict[str, Any]:
        if self.mixed_precision != "fp16":
            return super().train_step_single(batch, **fit_params)
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        y_pred = self.infer(Xi, **fit_params)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        self._scaler().scale(loss).backward()
        return {"loss": loss, "y_pred": y_pred}

    def train_step(self, batch: Any, **fit_params: Any) -> dict[str, Any]:
        """skorch's step, or with ``"fp16"`` the gradient scaler's (as
        :class:`~projkd.ProjectorDistiller`'s): gradients are unscaled before
        ``on_grad_computed``, and an overflowing step is skipped."""
        if self.mixed_precision != "fp16":
            return super().train_step(batch, **fit_params)
        # GradScaler takes no optimizer closure: one plain step per batch
        self._zero_grad_optimizer()
        step = self.train_step_single(batch, **fit_params)
        scaler = self._scaler()
        scaled_step(self, scaler, batch)
        return step

    def _scaler(self) -> torch.amp.GradScaler:
        if getattr(self, "scaler_", None) is None:
            self.scaler_ = grad_scaler(self.device, self.mixed_precision)
        return self.scaler_


class AcceleratedTeacherNet(DataParallelMixin, TeacherNet):
    """:class:`TeacherNet` trained data-parallel through an
    ``accelerate.Accelerator`` (:class:`~projkd.parallel.DataParallelMixin`):
    ``batch_size`` per process, precision and compilation the accelerator's.
    """


def train_teacher_run(spec: RunSpec) -> dict[str, Any]:
    """Train a teacher with the data set's recipe and save its weights.

    The recipe is the one distillation uses (for CIFAR-100: SGD 0.05, the
    240-epoch schedule scaled to ``spec.epochs``, crop + flip padded with
    black). The network is built and trained under ``spec.seed``. Writes
    ``teacher.pt``, ``history.json``, ``config.json`` and the results into
    ``spec.out``.

    Parameters
    ----------
    spec : RunSpec
        ``teacher_arch`` names the network.

    Returns
    -------
    record : dict
        Train accuracy, final test accuracy (the main figure) and the best
        epoch's test accuracy with its epoch (to compare with published
        tables only: it selects on the test set).
    """
    spec = spec.resolve()
    assert spec.teacher_arch is not None and spec.epochs is not None
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(spec.dataset, spec.data_root, subset=spec.subset, seed=spec.seed)
    fast = speed_kwargs(spec, data_device=False)
    launch = Launch.current(spec.device, fast)
    device = launch.device or spec.device  # a parallel launch: this process's
    model = build_model(spec.teacher_arch, data, seed=spec.seed, device=device)
    params = spec.training_params(spec.teacher_arch)
    params["callbacks"] = [
        *params.get("callbacks", []),
        *run_callbacks(spec, data.X_test, data.y_test, distiller=False),
    ]
    net_class: type[TeacherNet] = TeacherNet
    if launch.accelerator is not None:  # the recipe's batch is global
        net_class = AcceleratedTeacherNet
        params["batch_size"] = launch.per_process_batch(params["batch_size"])
    net = net_class(
        model,
        max_epochs=spec.epochs,
        train_split=None,
        verbose=0,
        **params,
        **{"device": spec.device, **launch.estimator_kwargs(fast)},
    )
    with seeded(spec.seed, device):
        net.fit(data.X_train, data.y_train)
    teacher = net.module_.eval()
    record: dict[str, Any] = {
        "model": f"teacher ({spec.teacher_arch})",
        "train_acc": _accuracy(teacher, data.X_train, data.y_train, device),
        "test_acc": _accuracy(teacher, data.X_test, data.y_test, device),
    }
    epoch, best = best_epoch(net.history)
    record.update(best_test_acc=best, best_epoch=epoch)
    if launch.is_main:
        _write_teacher_run(spec, out, teacher, net.history, record)
    launch.wait()  # the files are whole when any process returns
    return record


def _write_teacher_run(
    spec: RunSpec,
    out: Path,
    teacher: torch.nn.Module,
    history: Any,
    record: dict[str, Any],
) -> None:
    """Write a trained teacher's run folder (weights, history, results)."""
    save_teacher(getattr(teacher, "_orig_mod", teacher), out / "teacher.pt")
    history.to_file(str(out / "history.json"))
    save_json(out / "config.json", {"kind": "teacher", **spec.to_json()})
    best, epoch = record["best_test_acc"], record["best_epoch"]
    best_text = "-" if best is None else f"{100 * best:.2f} (epoch {epoch})"
    write_results(
        out,
        [record],
        "| model | train acc | test acc | best-epoch test acc |\n"
        "|---|---:|---:|---:|\n"
        f"| {record['model']} | {100 * record['train_acc']:.2f} | "
        f"{100 * record['test_acc']:.2f} | {best_text} |",
    )


def _accuracy(model: torch.nn.Module, X: Any, y: Any, device: str) -> float:
    logits = compute_teacher_outputs(model, X, device=device).logits
    return float((logits.argmax(1).numpy() == np.asarray(y)).mean())
