"""``projkd reproduce``: the paper's CIFAR-100 comparison, resumable, in one command.

:func:`reproduce` trains (or loads) a teacher, then distils it into the
student of the pair once per variant and seed -- the student alone, KD,
feature distillation with 0, 1 and 3 projectors, and KD on a logit
projector -- with the reference recipe of the data set, and writes
``results.json``, ``results.md`` and plots into its output folder.

Every run checkpoints each epoch (:class:`~projkd.callbacks.ResumableCheckpoint`,
one file per state, each well under 16 MiB for the CIFAR zoo), so a call
stopped by ``time_budget`` (or killed) continues where it stopped when the
same command is run again, and a finished run (its ``record.json``) is never
redone. Augmentation and shuffling are seeded per epoch, so a resumed run
gives the same weights as an uninterrupted one.

Layout of ``out``::

    settings.json              what the results depend on (checked on re-runs)
    teacher/                   record.json (done marker, metrics), teacher.pt, ckpt/
    runs/<variant>-seed<s>/    record.json, test_proba.npy, ckpt/ (epoch checkpoints)
    results.json, results.md, reliability.png, accuracy.png
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._random import seeded
from ..callbacks import ResumableCheckpoint
from ..distiller import ProjectorDistiller
from ..lockstep import EpochSeed, fit_lockstep
from ..metrics import linear_cka
from ..models import get_model, list_models
from ..parallel.process import is_main_process
from ..teacher.inference import compute_teacher_outputs
from ..teacher.io import load_teacher
from .data import Data, load_data
from .io import save_json
from .launch import Launch
from .recipes import default_epochs, recipe
from .reproduction_results import format_results, summarize, write_plots
from .reproduction_training import (
    FAST_SETTINGS,
    TimeBudget,
    _AcceleratedTeacherNet,
    _Clock,
    _curve_fields,
    _device_name,
    _metrics,
    _save_proba,
    _sha256,
    _TeacherCheckpoint,
    _TeacherNet,
    _TestScore,
    fast_settings,
)
from .spec import build_model, model_kwargs

__all__ = [
    "DEFAULT_PAIRS",
    "FAST_SETTINGS",
    "VARIANTS",
    "TEACHER_SEED",
    "TimeBudget",
    "add_subcommand",
    "fast_settings",
    "reproduce",
]

# name -> ProjectorDistiller parameters (METHOD.md; T = 4 is the default)
VARIANTS: dict[str, dict[str, Any]] = {
    "alone": dict(ce_weight=1.0, kd_weight=0.0, feature_weight=0.0, n_projectors=0),
    "kd": dict(ce_weight=0.1, kd_weight=0.9, feature_weight=0.0, n_projectors=0),
    "fd0": dict(ce_weight=1.0, kd_weight=0.0, feature_weight=25.0, n_projectors=0),
    "fd1": dict(ce_weight=1.0, kd_weight=0.0, feature_weight=25.0, n_projectors=1),
    "fd3": dict(ce_weight=1.0, kd_weight=0.0, feature_weight=25.0, n_projectors=3),
    "kd_lp": dict(
        ce_weight=0.1,
        kd_weight=0.9,
        feature_weight=0.0,
        n_projectors=0,
        logit_projector=True,
        logit_projector_init="identity",
    ),
}
DEFAULT_PAIRS = {
    "cifar100": "wrn_40_2:wrn_16_2",
    "digits": "digits_teacher:digits_student",
    "mnist": "digits_teacher:digits_student",
}
# apart from the students' seeds 0, 1, ...: with a pair of one architecture
# (self-distillation), "alone" would otherwise replay the teacher's training
TEACHER_SEED = 1000


def _factory(arch: str, data: Data, prefix: str) -> dict[str, Any]:
    """The network as a factory and its arguments, for the estimator to build
    inside its seeded fit (its checkpoint key then names the recipe, not
    the weights of one instance)."""
    kwargs = {f"{prefix}__{k}": v for k, v in model_kwargs(arch, data).items()}
    return {prefix: functools.partial(get_model, arch), **kwargs}


@dataclass
class _Context:
    """What every run of one call shares."""

    out: Path
    data: Data
    clock: _Clock
    device: str
    epochs: int
    teacher_arch: str
    student_arch: str
    teacher_weights: str | Path | None
    fast: dict[str, Any]
    recipe: Callable[[str], dict[str, Any]]
    equal_widths: bool
    verbose: bool
    lockstep: bool = False
    launch: Launch = field(default_factory=Launch)

    def estimator_kwargs(self, params: dict[str, Any]) -> dict[str, Any]:
        """The recipe's ``params`` with this launch's device and speed
        settings; under a parallel launch the recipe's (global) batch is
        shared out by the processes."""
        if self.launch.accelerator is not None:
            params = dict(
                params, batch_size=self.launch.per_process_batch(params["batch_size"])
            )
        return {
            **params,
            "device": self.device,
            **self.launch.estimator_kwargs(self.fast),
        }


# --------------------------------------------------------------- the runs
def _teacher_phase(ctx: _Context) -> tuple[dict[str, Any], torch.nn.Module] | None:
    """The teacher and its record: loaded when done, else given or trained."""
    folder = ctx.out / "teacher"
    done = folder / "record.json"
    if done.exists():
        record = json.loads(done.read_text())
        weights = ctx.out / record["weights"]  # relative to out, or absolute
        return record, _load(ctx, weights)
    if ctx.clock.out_of_time():
        return None
    started = time.monotonic()
    record = {"model": f"teacher ({ctx.teacher_arch})"}
    if ctx.teacher_weights is not None:
        weights = Path(ctx.teacher_weights).resolve()
        record.update(source="given", weights=str(weights))
    else:
        result = _train_teacher(ctx, folder)
        if result is None or ctx.clock.out_of_time():
            return None  # stopped on the budget (or no time to evaluate): resumes
        trained, curve = result
        weights = folder / "teacher.pt"
        state = {k: v.detach().float().cpu() for k, v in trained.state_dict().items()}
        if ctx.launch.is_main:
            torch.save(state, weights)
        ctx.launch.wait()  # every process loads the file the main one wrote
        record.update(source="trained", weights="teacher/teacher.pt", seed=TEACHER_SEED)
        record.update(curve)
    teacher = _load(ctx, weights)  # trained or not, students see the saved weights
    record["sha256"] = _sha256(weights)
    data = ctx.data
    proba = {
        name: torch.softmax(_logits(teacher, X, ctx.device), dim=1).numpy()
        for name, X in (("train", data.X_train), ("test", data.X_test))
    }
    record.update(_metrics(proba["train"], data.y_train, proba["test"], data.y_test))
    record["cka"] = 1.0
    ctx.clock.done(time.monotonic() - started)
    if ctx.launch.is_main:
        _save_proba(folder, proba["test"])
        save_json(done, record)
    return record, teacher


def _load(ctx: _Context, weights: Path) -> torch.nn.Module:
    model = build_model(
        ctx.teacher_arch, ctx.data, seed=TEACHER_SEED, device=ctx.device
    )
    return load_teacher(model, weights, device=ctx.device)


def _train_teacher(
    ctx: _Context, folder: Path
) -> tuple[torch.nn.Module, dict[str, Any]] | None:
    """The trained teacher and its training curve; None if stopped early."""
    params = ctx.recipe(ctx.teacher_arch)
    callbacks = _callbacks(
        ctx, params.pop("callbacks", []), folder, TEACHER_SEED, "teacher"
    )
    callbacks[1] = ("checkpoint", _TeacherCheckpoint(dirname=str(folder / "ckpt")))
    kwargs = ctx.estimator_kwargs(params)
    kwargs.pop("data_device", None)  # a TeacherNet slices host arrays
    net_class = _TeacherNet
    if ctx.launch.accelerator is not None:
        net_class = _AcceleratedTeacherNet
    net = net_class(
        **_factory(ctx.teacher_arch, ctx.data, "module"),
        criterion=torch.nn.CrossEntropyLoss,
        max_epochs=ctx.epochs,
        classes=np.arange(ctx.data.n_classes),
        train_split=None,
        verbose=0,
        callbacks=callbacks,
        seed=TEACHER_SEED,
        **kwargs,
    )
    with seeded(TEACHER_SEED, ctx.device):
        net.fit(ctx.data.X_train, ctx.data.y_train)
    if len(net.history) < ctx.epochs:
        return None  # stopped on the budget; resumes on the next call
    module: torch.nn.Module = net.module_
    curve = _curve_fields(net.history, len(ctx.data.y_train))
    return getattr(module, "_orig_mod", module).eval(), curve


def _callbacks(
    ctx: _Context, recipe_callbacks: list[Any], folder: Path, seed: int, label: str
) -> list[Any]:
    # order matters: the test score is recorded before the checkpoint saves the
    # history; the checkpoint loads before, and saves before, the lr scheduler
    # steps (skorch rebuilds the scheduler from the history's length); the
    # budget stops only after the epoch is saved
    return [
        (
            "test_score",
            _TestScore(
                ctx.data.X_test,
                ctx.data.y_test,
                label,
                ctx.verbose and ctx.launch.is_main,
            ),
        ),
        ("checkpoint", ResumableCheckpoint(dirname=str(folder / "ckpt"))),
        *recipe_callbacks,
        ("epoch_seed", EpochSeed(seed)),
        ("time_budget", TimeBudget(ctx.clock)),
    ]


def _folder(ctx: _Context, variant: str, seed: int) -> Path:
    return ctx.out / "runs" / f"{variant}-seed{seed}"


def _done(ctx: _Context, variant: str, seed: int) -> dict[str, Any] | None:
    done = _folder(ctx, variant, seed) / "record.json"
    return json.loads(done.read_text()) if done.exists() else None


def _student(
    ctx: _Context, teacher: torch.nn.Module, variant: str, seed: int
) -> ProjectorDistiller:
    """The (unfitted) estimator of one variant and seed, with its callbacks."""
    params = ctx.recipe(ctx.student_arch)
    callbacks = _callbacks(
        ctx,
        params.pop("callbacks", []),
        _folder(ctx, variant, seed),
        seed,
        f"{variant} seed {seed}",
    )
    variant_params = dict(VARIANTS[variant])
    if variant_params["feature_weight"] == 0 and not ctx.equal_widths:
        variant_params["n_projectors"] = 1  # unused; 0 needs equal widths
    cls: type[Any] = ProjectorDistiller
    if ctx.launch.accelerator is not None:
        from ..parallel import AcceleratedProjectorDistiller

        cls = AcceleratedProjectorDistiller
    return cls(
        teacher,
        **_factory(ctx.student_arch, ctx.data, "student"),
        max_epochs=ctx.epochs,
        random_state=seed,
        classes=np.arange(ctx.data.n_classes),
        train_split=None,
        verbose=0,
        callbacks=callbacks,
        **variant_params,
        **ctx.estimator_kwargs(params),
    )


def _finish(
    ctx: _Context, estimator: ProjectorDistiller, variant: str, seed: int
) -> dict[str, Any] | None:
    """Evaluate a fitted run and mark it done; None if it has not finished."""
    if len(estimator.history) < ctx.epochs or ctx.clock.out_of_time():
        return None  # stopped on the budget (or no time to evaluate): resumes
    data = ctx.data
    started = time.monotonic()
    proba_test = estimator.predict_proba(data.X_test)
    record: dict[str, Any] = {"model": variant, "variant": variant, "seed": seed}
    record.update(
        _metrics(
            estimator.predict_proba(data.X_train), data.y_train, proba_test, data.y_test
        )
    )
    record["cka"] = linear_cka(
        estimator.transform(data.X_test), estimator.transform_teacher(data.X_test)
    )
    record.update(_curve_fields(estimator.history, len(data.y_train)))
    record["params"] = _variant_params(estimator)
    record["lockstep"] = ctx.lockstep
    folder = _folder(ctx, variant, seed)
    ctx.clock.done(time.monotonic() - started)
    if ctx.launch.is_main:
        _save_proba(folder, proba_test)
        save_json(folder / "record.json", record)
    return record


def _variant_params(estimator: ProjectorDistiller) -> dict[str, Any]:
    names = [
        "ce_weight",
        "kd_weight",
        "feature_weight",
        "n_projectors",
        "temperature",
        "logit_projector",
        "logit_projector_init",
    ]
    return {name: getattr(estimator, name) for name in names}


def _seed_runs(
    ctx: _Context, teacher: torch.nn.Module, variants: list[str], seed: int
) -> dict[str, dict[str, Any] | None]:
    """The records of one seed's variants (None: not finished yet)."""
    records = {v: _done(ctx, v, seed) for v in variants}
    todo = [v for v in variants if records[v] is None]
    if not todo or ctx.clock.out_of_time():
        return records
    data = ctx.data
    if ctx.lockstep:
        estimators = [_student(ctx, teacher, v, seed) for v in todo]
        fit_lockstep(estimators, data.X_train, data.y_train)
        for variant, estimator in zip(todo, estimators, strict=True):
            records[variant] = _finish(ctx, estimator, variant, seed)
        return records
    for variant in todo:
        if ctx.clock.out_of_time():
            break
        estimator = _student(ctx, teacher, variant, seed)
        estimator.fit(data.X_train, data.y_train)
        records[variant] = _finish(ctx, estimator, variant, seed)
    return records


def _logits(model: torch.nn.Module, X: Any, device: str) -> torch.Tensor:
    """``model``'s float32 logits for ``X``, computed in batches on ``device``."""
    return compute_teacher_outputs(model, X, device=device).logits.float()


# ------------------------------------------------------------- validation
def _parse_pair(pair: str) -> tuple[str, str]:
    teacher, sep, student = pair.partition(":")
    if not sep or not teacher or not student:
        raise ValueError(
            f"pair={pair!r} is not TEACHER:STUDENT; e.g. 'wrn_40_2:wrn_16_2'."
        )
    known = list_models()
    for role, name in (("teacher", teacher), ("student", student)):
        if name not in known and not name.startswith("torchvision:"):
            raise ValueError(
                f"pair={pair!r}: the {role} {name!r} is not a projkd model; "
                f"choose from {', '.join(known)}."
            )
    return teacher, student


def _check_variants(variants: Sequence[str]) -> list[str]:
    variants = list(variants)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(
            f"variants={variants!r}: unknown {unknown}; choose from "
            f"{', '.join(VARIANTS)}."
        )
    if len(set(variants)) != len(variants):
        raise ValueError(f"variants={variants!r} lists a variant twice.")
    return variants


def _check_settings(out: Path, settings: dict[str, Any], write: bool = True) -> None:
    """Refuse to mix runs of other settings in one output folder (``write``:
    record them when the folder has none)."""
    path = out / "settings.json"
    if path.exists():
        saved = json.loads(path.read_text())
        differ = {
            k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v
        }
        if differ:
            details = "; ".join(
                f"{k}: {a!r} there, {b!r} now" for k, (a, b) in differ.items()
            )
            raise ValueError(
                f"{out} holds runs made with other settings ({details}). Re-run "
                "with the same settings to resume, or choose another out folder."
            )
    elif write:
        save_json(path, settings)


def _recipe_factory(
    dataset: str, epochs: int, batch_size: int | None
) -> tuple[Any, list[str]]:
    """The recipe of each network, with the opt-in deviations applied."""
    deviations: list[str] = []

    def make(arch: str) -> dict[str, Any]:
        params = recipe(dataset, arch, epochs)
        if batch_size is not None and batch_size != params["batch_size"]:
            scale = batch_size / params["batch_size"]
            params["lr"] = params["lr"] * scale
            params["batch_size"] = batch_size
        return params

    if batch_size is not None:
        base = recipe(dataset, "x", epochs)
        if batch_size != base["batch_size"]:
            deviations.append(
                f"batch {batch_size} instead of {base['batch_size']}, lr scaled "
                f"linearly by {batch_size / base['batch_size']:g}"
            )
    return make, deviations


# ------------------------------------------------------------------ entry
def reproduce(
    *,
    dataset: str = "cifar100",
    data_root: str | Path | None = None,
    pair: str | None = None,
    variants: Sequence[str] = tuple(VARIANTS),
    epochs: int | None = None,
    seeds: int = 1,
    out: str | Path = "runs/repro",
    teacher_weights: str | Path | None = None,
    time_budget: float | None = None,
    subset: int | None = None,
    device: str = "auto",
    fast: bool = True,
    batch_size: int | None = None,
    lockstep: bool = False,
    verbose: bool = False,
) -> dict[str, Any]:
    """Run (or continue) the paper's comparison of variants and write results.

    Parameters
    ----------
    dataset : {"cifar100", "digits", "mnist"}, default="cifar100"
    data_root : str, Path or None
        The data set's folder (CIFAR-100: the shared ``.npy.xz`` parts or
        torchvision's layout); not needed for digits.
    pair : str or None
        ``"TEACHER:STUDENT"`` model names; default ``wrn_40_2:wrn_16_2`` for
        CIFAR-100 (equal feature widths, 128 and 128, so ``fd0`` applies),
        the digits pair otherwise.
    variants : sequence of str, default=all of VARIANTS
        ``alone`` (CE), ``kd`` (0.1 CE + 0.9 KD, T = 4), ``fd0``/``fd1``/``fd3``
        (feature distillation, beta 25, with 0, 1 or 3 projectors), ``kd_lp``
        (KD on a logit projector, identity init).
    epochs : int or None
        Epochs of the teacher and of each student; the lr milestones scale
        with it. ``None``: the recipe's (240 for CIFAR-100).
    seeds : int, default=1
        Students are trained with seeds ``0 .. seeds - 1`` (a teacher with
        :data:`TEACHER_SEED`).
    out : str or Path, default="runs/repro"
    teacher_weights : str, Path or None
        A teacher ``state_dict`` (:func:`~projkd.teacher.save_teacher`) to use
        instead of training one.
    time_budget : float or None
        Seconds this call may take: it stops when the next epoch might not
        fit (at least one epoch or evaluation per call) and the same call
        continues later.
    subset : int or None
        Train on this many images (a fixed random subset).
    device : str, default="auto"
        ``"auto"``: CUDA when available.
    fast : bool, default=True
        On CUDA, the fast settings of :data:`FAST_SETTINGS` (those the
        installed estimator supports; listed in the results).
    batch_size : int or None
        Opt-in deviation from the recipe's batch (lr scaled linearly); it is
        written into the results.
    lockstep : bool, default=False
        Train the variants of each seed together on the same batches, one
        augmentation and one teacher forward per batch
        (:func:`~projkd.lockstep.fit_lockstep`; each result equals its separate
        fit). Times and images/s are then those of the joint epochs.
    verbose : bool, default=False
        A line per epoch on standard error.

    Returns
    -------
    results : dict
        What ``results.json`` holds; ``complete`` says whether every run
        has finished.

    Examples
    --------
    >>> from projkd.experiments import reproduce
    >>> # reproduce(dataset="cifar100", data_root="data/cifar100", epochs=60,
    >>> #           out="runs/repro", time_budget=500)
    """
    clock = _Clock(time_budget)  # loading the data counts
    if time_budget is not None and not time_budget > 0:
        raise ValueError(f"time_budget={time_budget!r} must be a positive number.")
    if dataset not in DEFAULT_PAIRS:
        raise ValueError(
            f"dataset={dataset!r} is not supported; use one of {list(DEFAULT_PAIRS)}."
        )
    for name, value in (
        ("seeds", seeds),
        ("epochs", epochs),
        ("batch_size", batch_size),
    ):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name}={value!r} must be a positive integer.")
    variants = _check_variants(variants)
    teacher_arch, student_arch = _parse_pair(pair or DEFAULT_PAIRS[dataset])
    if teacher_weights is not None and not Path(teacher_weights).is_file():
        raise ValueError(f"teacher_weights={str(teacher_weights)!r}: no such file.")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    requested, fast_params = fast_settings(device, fast)
    launch = Launch.current(device, fast_params)
    if launch.accelerator is not None:
        if lockstep:
            raise ValueError(
                "lockstep=True trains a seed's variants together in one process; "
                f"under a launch of {launch.world_size} processes drop --lockstep "
                "(each variant then trains data-parallel on all of them)."
            )
        device = launch.device or device  # this process's GPU, or the CPU
        clock.agree = launch.agree  # all processes stop at the same point
    epochs = epochs or default_epochs(dataset)
    make_recipe, deviations = _recipe_factory(dataset, epochs, batch_size)
    for arch in {teacher_arch, student_arch}:  # before anything trains
        launch.per_process_batch(make_recipe(arch)["batch_size"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    data = load_data(
        dataset, None if data_root is None else str(data_root), subset=subset
    )
    widths = [
        getattr(build_model(arch, data, seed=0), "num_features", None)
        for arch in (teacher_arch, student_arch)
    ]
    equal_widths = widths[0] is not None and widths[0] == widths[1]
    if "fd0" in variants and not equal_widths:
        raise ValueError(
            f"fd0 needs equal feature widths, but {teacher_arch} has {widths[0]} and "
            f"{student_arch} {widths[1]}; drop fd0 from variants or change the pair."
        )
    on_cuda = torch.device(device).type == "cuda"
    settings = {
        "dataset": dataset,
        "subset": subset,
        "pair": f"{teacher_arch}:{student_arch}",
        "epochs": epochs,
        "device_type": torch.device(device).type,
        "fast_settings": fast_params,
        "deviations": deviations,
        "teacher_weights": None
        if teacher_weights is None
        else _sha256(Path(teacher_weights)),
    }
    _check_settings(out, settings, write=launch.is_main)
    ctx = _Context(
        out=out,
        data=data,
        clock=clock,
        device=device,
        epochs=epochs,
        teacher_arch=teacher_arch,
        student_arch=student_arch,
        teacher_weights=teacher_weights,
        fast=fast_params,
        recipe=make_recipe,
        equal_widths=equal_widths,
        verbose=verbose,
        lockstep=lockstep,
        launch=launch,
    )
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on_cuda or benchmark
    try:
        records, pending = _run_all(ctx, variants, seeds)
    finally:
        torch.backends.cudnn.benchmark = benchmark
    results = summarize(
        settings=settings,
        variants=variants,
        seeds=seeds,
        records=records,
        pending=pending,
        device_name=_device_name(device),
        fast_requested=requested,
        fast_unavailable=sorted(set(requested) - set(fast_params)),
    )
    results["processes"] = launch.world_size
    if launch.is_main:
        save_json(out / "results.json", results)
        (out / "results.md").write_text(format_results(results) + "\n")
        results["plots"] = write_plots(out, results, data.y_test)
        save_json(out / "results.json", results)
    launch.wait()  # the files are whole when any process returns
    return results


def _run_all(
    ctx: _Context, variants: list[str], seeds: int
) -> tuple[list[dict[str, Any]], list[str]]:
    names = [f"{v}-seed{s}" for s in range(seeds) for v in variants]
    teacher = _teacher_phase(ctx)
    if teacher is None:
        return [], ["teacher", *names]
    records: list[dict[str, Any]] = [teacher[0]]
    pending: list[str] = []
    for seed in range(seeds):
        for variant, record in _seed_runs(ctx, teacher[1], variants, seed).items():
            if record is None:
                pending.append(f"{variant}-seed{seed}")
            else:
                records.append(record)
    return records, pending


# -------------------------------------------------------------------- CLI
def _names(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def add_subcommand(parser: argparse.ArgumentParser) -> None:
    """Register ``projkd reproduce`` on the ``projkd`` parser.

    The parsed namespace's ``handler`` runs the command.
    """
    # argparse has no public accessor for the subcommands of a built parser
    commands = next(
        action
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    sub = commands.add_parser(
        "reproduce",
        help="the paper's comparison of variants, resumable (CIFAR-100)",
        description="Train (or load) a teacher, distil it into the student of "
        "the pair once per variant and seed, and write results.json, results.md "
        "and plots. Re-running the same command continues where it stopped.",
    )
    sub.add_argument("--dataset", choices=list(DEFAULT_PAIRS), default="cifar100")
    sub.add_argument("--data-root", help="folder of the data set's files")
    sub.add_argument(
        "--pair", help="TEACHER:STUDENT (default wrn_40_2:wrn_16_2 for cifar100)"
    )
    sub.add_argument(
        "--variants",
        type=_names,
        default=list(VARIANTS),
        help=f"comma-separated, of {','.join(VARIANTS)} (all)",
    )
    sub.add_argument(
        "--epochs", type=int, help="epochs per network (the recipe's: 240 on cifar100)"
    )
    sub.add_argument("--seeds", type=int, default=1, help="students per variant (1)")
    sub.add_argument("--out", default="runs/repro", help="output folder")
    sub.add_argument("--teacher-weights", help="a teacher state_dict; skips training")
    sub.add_argument(
        "--time-budget",
        type=float,
        help="seconds this call may take; run it again to continue",
    )
    sub.add_argument("--subset", type=int, help="use this many training images")
    sub.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    sub.add_argument(
        "--no-fast",
        action="store_true",
        help="on CUDA: fp32, eager, no channels_last (the fast settings are default)",
    )
    sub.add_argument(
        "--batch-size",
        type=int,
        help="deviate from the recipe's batch (lr scaled linearly; recorded)",
    )
    sub.add_argument(
        "--lockstep",
        action="store_true",
        help="train each seed's variants together, one teacher forward per batch",
    )
    sub.add_argument("--quiet", action="store_true", help="no line per epoch")
    sub.set_defaults(handler=_run_command)


def _run_command(args: argparse.Namespace) -> int:
    results = reproduce(
        dataset=args.dataset,
        data_root=args.data_root,
        pair=args.pair,
        variants=args.variants,
        epochs=args.epochs,
        seeds=args.seeds,
        out=args.out,
        teacher_weights=args.teacher_weights,
        time_budget=args.time_budget,
        subset=args.subset,
        device=args.device,
        fast=not args.no_fast,
        batch_size=args.batch_size,
        lockstep=args.lockstep,
        verbose=not args.quiet,
    )
    if is_main_process():
        print((Path(args.out) / "results.md").read_text())
    return 0 if results["complete"] else 3
