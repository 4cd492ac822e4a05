"""``projkd train-teacher``: train a teacher with its data set's recipe.

The net is the library's :class:`~projkd.teacher.TeacherNet` (re-exported as
``projkd.experiments.TeacherNet``), or :class:`AcceleratedTeacherNet` under a
parallel launch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..parallel import DataParallelMixin
from ..teacher.inference import compute_teacher_outputs
from ..teacher.io import save_teacher
from ..teacher.training import TeacherNet
from ..training.compiling import unwrap_compiled
from .data import load_data
from .io import output_folder, save_json, write_results
from .launch import Launch
from .progress import PhaseLog
from .spec import RunSpec, build_model, speed_kwargs
from .tracking import best_epoch, run_callbacks

__all__ = ["AcceleratedTeacherNet", "TeacherNet", "train_teacher_run"]


class AcceleratedTeacherNet(DataParallelMixin, TeacherNet):
    """:class:`~projkd.teacher.TeacherNet` trained data-parallel through an
    ``accelerate.Accelerator`` (:class:`~projkd.parallel.DataParallelMixin`):
    ``batch_size`` per process, precision and compilation the accelerator's;
    array batches are sharded per process in one shuffled order.
    """


def train_teacher_run(spec: RunSpec) -> dict[str, Any]:
    """Train a teacher with the data set's recipe and save its weights.

    The recipe is the one distillation uses (for CIFAR-100: SGD 0.05, the
    240-epoch schedule scaled to ``spec.epochs``, crop + flip padded with
    black). The network is built and trained under ``spec.seed``. The
    output folder ``spec.out`` is made before training; ``teacher.pt``,
    ``history.json`` and ``config.json`` are written as soon as the teacher
    is trained, the results after its evaluation.

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
    out = output_folder(spec.out)  # before training: a typo costs no run
    data = load_data(
        spec.dataset,
        spec.data_root,
        subset=spec.subset,
        seed=spec.seed,
        download=spec.download,
    )
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
        random_state=spec.seed,  # seeds the fit and each epoch's batch order
        **params,
        **{"device": spec.device, **launch.estimator_kwargs(fast)},
    )
    log = PhaseLog("projkd train-teacher", enabled=spec.progress and launch.is_main)
    net.fit(data.X_train, data.y_train)
    teacher = net.module_.eval()
    if launch.is_main:  # saved before it is evaluated
        log(f"saving the teacher in {out}")
        save_teacher(unwrap_compiled(teacher), out / "teacher.pt")
        net.history.to_file(str(out / "history.json"))
        save_json(out / "config.json", {"kind": "teacher", **spec.to_json()})
    log(
        f"accuracy on the {len(data.y_train)} training and {len(data.y_test)} "
        "test images"
    )
    record: dict[str, Any] = {
        "model": f"teacher ({spec.teacher_arch})",
        "train_acc": _accuracy(teacher, data.X_train, data.y_train, device),
        "test_acc": _accuracy(teacher, data.X_test, data.y_test, device),
    }
    epoch, best = best_epoch(net.history)
    record.update(best_test_acc=best, best_epoch=epoch)
    if launch.is_main:
        _write_teacher_results(out, record)
    launch.wait()  # the files are whole when any process returns
    return record


def _write_teacher_results(out: Path, record: dict[str, Any]) -> None:
    """Write a trained teacher's results (its weights are saved already)."""
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
