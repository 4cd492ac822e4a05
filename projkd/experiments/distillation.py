"""``projkd distill``: distil a saved teacher into a student; reload it.

Every run's real work goes through :class:`~projkd.ProjectorDistiller`. A run
writes a folder: ``config.json`` (what to rebuild it from), weights as
``state_dict`` files (loaded with ``weights_only=True``), ``history.json``,
and its results as ``results.json`` and ``results.md``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..distiller import ProjectorDistiller
from ..errors import InputError
from ..parallel.process import is_main_process, writes_outputs
from ..teacher.io import load_teacher
from .data import Data, load_data
from .io import output_folder, read_json, save_json, write_results
from .launch import Launch
from .progress import PhaseLog
from .spec import RunSpec, build_model, speed_kwargs
from .tracking import best_epoch, epoch_test_rows, run_callbacks

__all__ = ["build_estimator", "distill", "distiller_setup", "load_run", "run_config"]


def distiller_setup(
    spec: RunSpec, world_size: int | None = None
) -> tuple[type[ProjectorDistiller], dict[str, Any]]:
    """The estimator class and its speed parameters for this launch.

    A plain launch trains a :class:`~projkd.ProjectorDistiller` with
    :func:`~projkd.experiments.speed_kwargs`. Under ``torchrun`` or
    ``accelerate launch`` (``WORLD_SIZE > 1``) it is an
    :class:`~projkd.parallel.AcceleratedProjectorDistiller` sharing the
    launch's ``accelerator``, which decides devices, precision and
    compilation (:class:`~projkd.experiments.launch.Launch`).

    Parameters
    ----------
    spec : RunSpec
    world_size : int or None, default=None
        ``None`` reads ``WORLD_SIZE`` from the environment.

    Returns
    -------
    cls : type
    kwargs : dict
        Parameters for ``cls`` beyond the recipe's.
    """
    fast = speed_kwargs(spec)
    launch = Launch.current(spec.device, fast, world_size)
    kwargs = {"device": spec.device, **launch.estimator_kwargs(fast)}
    if launch.accelerator is None:
        return ProjectorDistiller, kwargs
    from ..parallel import AcceleratedProjectorDistiller

    return AcceleratedProjectorDistiller, kwargs


def _teacher(config: dict[str, Any], data: Data, device: str | None) -> torch.nn.Module:
    model = build_model(config["teacher_arch"], data, seed=config["seed"])
    return load_teacher(model, config["teacher_weights"], device=device or "cpu")


def build_estimator(
    config: dict[str, Any],
    data: Data,
    spec: RunSpec,
    *,
    callbacks: list[Any],
    world_size: int | None = None,
) -> ProjectorDistiller:
    """The (unfitted) student estimator of a run: its saved teacher, the
    recipe of the student's network, the run's distiller parameters and
    this launch's speed settings.

    Parameters
    ----------
    config : dict
        What :func:`run_config` returns (or a run's ``config.json``).
    data : Data
    spec : RunSpec
    callbacks : list
        Added after the recipe's.
    world_size : int or None, default=None
        As in :func:`distiller_setup`.

    Returns
    -------
    estimator : ProjectorDistiller
        Or an :class:`~projkd.parallel.AcceleratedProjectorDistiller` under a
        parallel launch (its global batch shared out by the processes).
    """
    params = dataclasses.replace(spec, epochs=config["epochs"]).training_params(
        config["student_arch"]
    )
    params["callbacks"] = [*params.get("callbacks", []), *callbacks]
    params.update(config["params"])
    cls, speed = distiller_setup(spec, world_size)
    device = speed["device"]
    accelerator = speed.get("accelerator")
    if accelerator is not None:  # the recipe's batch is global: share it out
        launch = Launch(accelerator.num_processes, accelerator)
        params["batch_size"] = launch.per_process_batch(params["batch_size"])
        device = launch.device
    return cls(
        _teacher(config, data, device),
        build_model(config["student_arch"], data, seed=config["seed"]),
        max_epochs=config["epochs"],
        random_state=config["seed"],
        classes=np.arange(data.n_classes),
        train_split=None,
        verbose=0,
        **params,
        **speed,
    )


def run_config(spec: RunSpec, **params: Any) -> dict[str, Any]:
    """A student run's ``config.json``: the spec, the teacher's weights
    (resolved) and the distiller ``params``.

    Raises
    ------
    ValueError
        If ``spec`` names no teacher weights.
    """
    if spec.teacher_weights is None:
        raise InputError(
            "No teacher: give --teacher-weights (a teacher.pt written by "
            "projkd train-teacher)."
        )
    return {
        "kind": "student",
        **spec.to_json(),
        "teacher_weights": str(Path(spec.teacher_weights).resolve()),
        "params": params,
    }


def distill(spec: RunSpec, **distiller_params: Any) -> dict[str, Any]:
    """Distil a saved teacher into a student; save the student and its results.

    The student is built under ``spec.seed`` and trained with the data set's
    recipe (CIFAR-100: 240 epochs scaled to ``spec.epochs``). The output
    folder is made before training, the student saved as soon as it is
    trained, then evaluated (a progress line per phase). Under a
    multi-process launch only the main process writes files.

    Parameters
    ----------
    spec : RunSpec
        ``teacher_weights`` is required.
    **distiller_params
        :class:`~projkd.ProjectorDistiller` parameters (``n_projectors``,
        ``feature_weight``, ...), recorded in ``config.json``.

    Returns
    -------
    record : dict
        The student's row of :func:`projkd.analysis.compare`, with
        ``best_test_acc`` and ``best_epoch`` beside the final ``test_acc``.
    """
    spec = spec.resolve()
    config = run_config(spec, **distiller_params)
    out = output_folder(spec.out)  # before training: a typo costs no run
    data = load_data(
        spec.dataset,
        spec.data_root,
        subset=spec.subset,
        seed=spec.seed,
        download=spec.download,
    )
    log = PhaseLog("projkd distill", enabled=spec.progress and is_main_process())
    callbacks = run_callbacks(spec, data.X_test, data.y_test, distiller=True)
    estimator = build_estimator(config, data, spec, callbacks=callbacks)
    estimator.fit(data.X_train, data.y_train)
    log(f"saving the student in {out}")
    # saved before it is evaluated: the evaluation can fail or be stopped;
    # every process calls it (it waits for all); the main process writes
    estimator.save_params(
        f_params=str(out / "student.pt"),
        f_projectors=str(out / "projectors.pt"),
        f_logit_projector=str(out / "logit_projector.pt"),
        f_history=str(out / "history.json"),
    )
    if writes_outputs(estimator):
        save_json(out / "config.json", config)
    from ..analysis import compare, format_markdown

    records = compare(
        {config["student_arch"]: estimator},
        data.X_train,
        data.y_train,
        data.X_test,
        data.y_test,
        progress=log,
    )
    epoch, best = best_epoch(estimator.history)
    records[-1].update(best_test_acc=best, best_epoch=epoch)
    if writes_outputs(estimator):
        markdown = format_markdown(records)
        if best is not None:
            markdown += (
                f"\n\nBest-epoch test accuracy {100 * best:.2f}% (epoch {epoch}), "
                "for comparison with published tables only; the final epoch's "
                "is the main figure."
                + _epoch_test_note(spec.epoch_test_images, len(data.y_test))
            )
        write_results(out, records, markdown)
    if accelerator := getattr(estimator, "accelerator", None):
        accelerator.wait_for_everyone()  # the files are whole when any returns
    return records[-1]


def _epoch_test_note(limit: int | None, n_test: int) -> str:
    """How the best epoch was selected, when not on the whole test set."""
    if epoch_test_rows(n_test, limit) is None:
        return ""
    return (
        f" Epochs before the last were scored on a fixed {limit} of the "
        f"{n_test} test images (--epoch-test-images)."
    )


def load_run(
    folder: str | Path, *, device: str = "cpu"
) -> tuple[ProjectorDistiller, Data]:
    """Rebuild a saved student (and its teacher and data) from a run folder.

    Weights are loaded with ``weights_only=True``: a file carrying code is
    refused.
    """
    folder = Path(folder)
    config = read_json(folder / "config.json", "the run's config", keys=("kind",))
    if config.get("kind") != "student":
        raise InputError(
            f"{folder} holds no distilled student (kind {config.get('kind')!r})."
        )
    read_json(folder / "history.json", "the run's history")  # whole, before use
    fields = {f.name for f in dataclasses.fields(RunSpec)}
    spec = RunSpec(**{k: v for k, v in config.items() if k in fields})
    spec = dataclasses.replace(
        spec,
        device=device,
        fast=False,
        progress=False,
        mixed_precision=None,
        compile=None,
        channels_last=None,
    )
    data = load_data(
        spec.dataset,
        spec.data_root,
        subset=spec.subset,
        seed=spec.seed,
        download=spec.download,
    )
    estimator = build_estimator(
        {**config, "epochs": 0}, data, spec, callbacks=[], world_size=1
    )
    estimator.set_params(cache_teacher=False)
    per_class = [np.flatnonzero(data.y_train == c)[:1] for c in range(data.n_classes)]
    sample = np.concatenate([i for i in per_class if len(i)] or [np.arange(2)])
    estimator.fit(data.X_train[sample], data.y_train[sample])  # 0 epochs: builds it
    estimator.load_params(
        f_params=str(folder / "student.pt"),
        f_projectors=str(folder / "projectors.pt"),
        f_logit_projector=str(folder / "logit_projector.pt"),
        f_history=str(folder / "history.json"),
    )
    return estimator, data
