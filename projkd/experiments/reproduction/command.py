"""``projkd reproduce``: the :func:`reproduce` function.

:func:`reproduce` checks its arguments and makes its output folder, fixes
the settings the results depend on (refusing an output folder of other
settings, or a call that would leave out runs it holds:
:mod:`.settings`), plans ``--epochs auto`` (:mod:`.planning`), and hands
the runs to :func:`~projkd.experiments.reproduction.runs.run_all`; then it
writes ``results.json`` (the plan's predicted phase times beside the
measured ones), ``results.md`` and the plots. The command line's flags are
in :mod:`.subcommand`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ...errors import InputError
from ...training.device import cudnn_benchmark
from ..data import load_data
from ..io import output_folder, save_json
from ..launch import Launch
from ..recipes import default_epochs, recipe
from ..spec import build_model
from .planning import PLAN_LIMIT, check_budget_left, phase_times, plan_epochs
from .results import format_results, summarize, write_plots
from .runs import RunContext, measure_phases, run_all
from .settings import (
    check_request,
    check_settings,
    check_variants,
    parse_pair,
    record_request,
    saved_plan,
)
from .state import merge_state, unpacked_state
from .training import Clock, device_name, fast_settings, sha256
from .variants import VARIANTS

__all__ = ["DEFAULT_PAIRS", "reproduce"]

# the pair each data set is reproduced with by default
DEFAULT_PAIRS = {
    "cifar100": "wrn_40_2:wrn_16_2",
    "digits": "digits_teacher:digits_student",
    "mnist": "mnist_teacher:mnist_student",
}


# ---------------------------------------------------------------- recipe
def _recipe_factory(
    dataset: str,
    epochs: int,
    batch_size: int | None,
    warmup_epochs: int | None = None,
) -> tuple[Any, list[str]]:
    """The recipe of each network, with the opt-in deviations applied (a
    larger batch: a linear lr warm-up of ``warmup_epochs``, 2 by default)."""
    deviations: list[str] = []
    base = recipe(dataset, "x", epochs)
    larger = batch_size is not None and batch_size > base["batch_size"]
    warmup = (2 if larger else 0) if warmup_epochs is None else warmup_epochs

    def make(arch: str) -> dict[str, Any]:
        params = recipe(dataset, arch, epochs, warmup_epochs=warmup)
        if batch_size is not None and batch_size != params["batch_size"]:
            scale = batch_size / params["batch_size"]
            params["lr"] = params["lr"] * scale
            params["batch_size"] = batch_size
        return params

    if batch_size is not None and batch_size != base["batch_size"]:
        deviations.append(
            f"batch {batch_size} instead of {base['batch_size']}, lr scaled "
            f"linearly by {batch_size / base['batch_size']:g}"
        )
    if warmup:
        deviations.append(f"linear lr warm-up over the first {warmup} epochs")
    return make, deviations


# ------------------------------------------------------------------ entry
def reproduce(
    *,
    dataset: str = "cifar100",
    data_root: str | Path | None = None,
    download: bool = False,
    pair: str | None = None,
    variants: Sequence[str] = tuple(VARIANTS),
    epochs: int | str | None = None,
    min_epochs: int = 10,
    seeds: int = 1,
    out: str | Path = "runs/repro",
    teacher_weights: str | Path | None = None,
    resume_from: str | Path | None = None,
    time_budget: float | None = None,
    subset: int | None = None,
    epoch_test_images: int | None = None,
    device: str = "auto",
    fast: bool = True,
    batch_size: int | None = None,
    warmup_epochs: int | None = None,
    lockstep: bool | None = None,
    verbose: bool = False,
    started: float | None = None,
) -> dict[str, Any]:
    """Run (or continue) the paper's comparison of variants and write results.

    Parameters
    ----------
    dataset : {"cifar100", "digits", "mnist"}, default="cifar100"
    data_root : str, Path or None
        The data set's folder (CIFAR-100: the shared ``.npy.xz`` parts or
        torchvision's layout); not needed for digits.
    download : bool, default=False
        Let torchvision download the data set into ``data_root``.
    pair : str or None
        ``"TEACHER:STUDENT"`` model names; default ``wrn_40_2:wrn_16_2`` for
        CIFAR-100 (equal feature widths, 128 and 128, so ``fd0`` applies),
        the digits pair otherwise.
    variants : sequence of str, default=all of VARIANTS
        ``alone`` (CE), ``kd`` (0.1 CE + 0.9 KD, T = 4), ``fd0``/``fd1``/``fd3``
        (feature distillation, beta 25, with 0, 1 or 3 projectors), ``kd_lp``
        (KD on a logit projector, identity init).
    epochs : int, "auto" or None
        Epochs of the teacher and of each student; the lr milestones scale
        with it. ``None``: the recipe's (240 for CIFAR-100). ``"auto"``
        (with ``time_budget``): planned so that the command ends at 90% of
        its budget, from a short warm-up of each phase on this device
        (:mod:`~projkd.experiments.reproduction.planning`); the plan is
        frozen in the output folder's settings, and a later call resumes it.
    min_epochs : int, default=10
        With ``epochs="auto"``: refuse before training when fewer epochs fit,
        naming what would.
    seeds : int, default=1
        Students are trained with seeds ``0 .. seeds - 1`` (a teacher with
        :data:`TEACHER_SEED`).
    out : str or Path, default="runs/repro"
        Made (or checked writable) before anything else runs. A folder that
        holds runs of other settings is refused, and so is one holding runs
        (or a record of runs asked for) that ``variants`` and ``seeds`` would
        leave out of the report.
    teacher_weights : str, Path or None
        A teacher ``state_dict`` (:func:`~projkd.teacher.save_teacher`) to use
        instead of training one.
    resume_from : str, Path or None
        The state of an earlier call, perhaps on another machine whose output
        folder is gone: a ``state.tar.xz`` that ``benchmarks/gpu_session.sh``
        brought back (:func:`~projkd.experiments.reproduction.state.pack_state`;
        or its first part ``state.tar.xz.0``), a folder holding it (and the
        trained teacher's ``.pt``, if the archive left it out), or a run
        folder. Its runs are restored into ``out`` before anything trains
        (refused when either holds runs of other settings, or the archive a
        member outside its folder); the call then resumes them, with the
        frozen ``epochs="auto"`` plan.
    time_budget : float or None
        Seconds this call may take, from its start (data loading, compiling,
        evaluation and checkpoints included): it stops when the next epoch
        might not fit (at least one epoch or evaluation per call) and the
        same call continues later. A planned run (``epochs="auto"``) aims
        at 90% of it and is stopped only past 115% of it; a budget spent
        before its warm-up could start is refused at once.
    subset : int or None
        Train on this many images (a fixed random subset).
    epoch_test_images : int or None, default=None
        Score each epoch but the last on a fixed subset of this many test
        images, the last epoch on all of them (cheap per-epoch scores for a
        quick ``subset`` run); None: all of them every epoch, as the
        published tables' best epoch.
    device : str, default="auto"
        ``"auto"``: CUDA when available.
    fast : bool, default=True
        On CUDA, the fast settings of :data:`FAST_SETTINGS` (those the
        installed estimator supports; listed in the results).
    batch_size : int or None
        Opt-in deviation from the recipe's batch (lr scaled linearly); it is
        written into the results.
    warmup_epochs : int or None
        A linear lr warm-up over the first epochs (recorded as a deviation);
        ``None``: 2 with a batch larger than the recipe's, else none.
    lockstep : bool or None, default=None
        Train the variants of each seed together on the same batches, one
        augmentation and one teacher forward per batch
        (:func:`~projkd.lockstep.fit_lockstep`; each result equals its separate
        fit). Times and images/s are then those of the joint epochs.
        ``None``: with ``epochs="auto"``, when the warm-up measures it faster
        than separate fits (the choice and both step times are in the plan);
        otherwise not.
    verbose : bool, default=False
        A line per epoch on standard error.
    started : float or None, default=None
        The :func:`time.monotonic` time ``time_budget`` counts from; None:
        this call's start. The command line passes its process's start
        (:func:`~projkd.experiments.reproduction.training.process_start`):
        a command's budget includes its imports.

    Returns
    -------
    results : dict
        What ``results.json`` holds; ``complete`` says whether every run
        has finished, ``phases`` the seconds of each phase this call ran
        beside the plan's prediction.

    Examples
    --------
    >>> from projkd.experiments import reproduce
    >>> # reproduce(dataset="cifar100", data_root="data/cifar100", epochs=60,
    >>> #           out="runs/repro", time_budget=500)
    """
    clock = Clock(time_budget, start=started)  # loading the data counts
    if time_budget is not None and not (
        isinstance(time_budget, int | float)
        and math.isfinite(time_budget)
        and time_budget > 0
    ):
        raise InputError(
            f"time_budget={time_budget!r} must be a finite positive number of seconds."
        )
    if dataset not in DEFAULT_PAIRS:
        raise InputError(
            f"dataset={dataset!r} is not supported; use one of {list(DEFAULT_PAIRS)}."
        )
    auto = epochs == "auto"
    if auto and time_budget is None:
        raise InputError(
            "epochs='auto' plans the run to a time budget; pass time_budget "
            "(--time-budget SECONDS) or a number of epochs."
        )
    for name, value in (
        ("seeds", seeds),
        ("epochs", None if auto else epochs),
        ("min_epochs", min_epochs),
        ("batch_size", batch_size),
        ("subset", subset),
        ("epoch_test_images", epoch_test_images),
    ):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise InputError(f"{name}={value!r} must be a positive integer.")
    if warmup_epochs is not None and (
        not isinstance(warmup_epochs, int) or warmup_epochs < 0
    ):
        raise InputError(f"warmup_epochs={warmup_epochs!r} must be an integer >= 0.")
    variants = check_variants(variants)
    teacher_arch, student_arch = parse_pair(pair or DEFAULT_PAIRS[dataset])
    if teacher_weights is not None and not Path(teacher_weights).is_file():
        raise InputError(f"teacher_weights={str(teacher_weights)!r}: no such file.")
    if resume_from is not None and not Path(resume_from).exists():
        raise InputError(f"resume_from={str(resume_from)!r}: no such file or folder.")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    requested, fast_params = fast_settings(device, fast)
    launch = Launch.current(device, fast_params)
    if launch.accelerator is not None:
        if lockstep is None:
            lockstep = False
        if lockstep:
            raise InputError(
                "lockstep=True trains a seed's variants together in one process; "
                f"under a launch of {launch.world_size} processes drop --lockstep "
                "(each variant then trains data-parallel on all of them)."
            )
        device = launch.device or device  # this process's GPU, or the CPU
        clock.agree = launch.agree  # all processes stop at the same point
    epochs = default_epochs(dataset) if auto or epochs is None else int(epochs)
    make_recipe, deviations = _recipe_factory(
        dataset, epochs, batch_size, warmup_epochs
    )
    for arch in {teacher_arch, student_arch}:  # before anything trains
        launch.per_process_batch(make_recipe(arch)["batch_size"])
    out = output_folder(out)  # before anything runs: a typo costs no run

    data = load_data(
        dataset,
        None if data_root is None else str(data_root),
        subset=subset,
        download=download,
    )
    widths = [
        getattr(build_model(arch, data, seed=0), "num_features", None)
        for arch in (teacher_arch, student_arch)
    ]
    equal_widths = widths[0] is not None and widths[0] == widths[1]
    if "fd0" in variants and not equal_widths:
        raise InputError(
            f"fd0 needs equal feature widths, but {teacher_arch} has {widths[0]} and "
            f"{student_arch} {widths[1]}; drop fd0 from variants or change the pair."
        )
    settings = {
        "dataset": dataset,
        "subset": subset,
        "pair": f"{teacher_arch}:{student_arch}",
        "epochs": "auto" if auto else epochs,
        "device_type": torch.device(device).type,
        "fast_settings": fast_params,
        "deviations": deviations,
        "teacher_weights": None
        if teacher_weights is None
        else sha256(Path(teacher_weights)),
        "epoch_test_images": epoch_test_images,
    }
    if resume_from is not None and Path(resume_from).resolve() == out.resolve():
        resume_from = None  # the folder itself: an ordinary resumed call
    if resume_from is not None and launch.is_main:  # before anything trains
        with unpacked_state(resume_from, out) as state:
            shown = f"the state {str(resume_from)!r}"
            check_settings(state, settings, False, shown)
            check_request(state, variants, seeds, shown)
            check_settings(out, settings, write=False)
            check_request(out, variants, seeds)
            merge_state(state, out)
    launch.wait()
    check_settings(out, settings, write=launch.is_main and not auto)
    check_request(out, variants, seeds)
    ctx = RunContext(
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
        lockstep=bool(lockstep),
        launch=launch,
        epoch_test_images=epoch_test_images,
    )
    plan, planned_here = None, False
    if auto:
        plan = saved_plan(out)  # frozen by an earlier call: never re-planned
        if plan is None:
            planned_here = True
            plan = launch.agree(
                _plan(
                    ctx, variants, seeds, float(time_budget or 0), min_epochs, lockstep
                )
            )
            if launch.is_main:
                save_json(out / "settings.json", {**settings, "plan": plan})
            predicted = plan.get("predicted_s")
            ctx.say(
                f"--epochs auto: planned {plan['epochs']} epochs"
                + ("" if predicted is None else f", {predicted:.0f} s")
                + f" of the {time_budget:g} s budget"
            )
        make_recipe, _ = _recipe_factory(
            dataset, plan["epochs"], batch_size, warmup_epochs
        )
        ctx.epochs, ctx.recipe = plan["epochs"], make_recipe
        clock.stop_at = PLAN_LIMIT * float(time_budget or 0)  # the plan's net
        ctx.lockstep = plan["lockstep"] if lockstep is None else bool(lockstep)
        ctx.graphs = bool(
            plan.get("graphs") and ctx.estimator_kwargs({}).get("compile")
        )
    if launch.is_main:
        record_request(out, variants, seeds)  # the state knows what was asked
    with cudnn_benchmark(device):
        records, pending = run_all(ctx, variants, seeds)
    results = summarize(
        settings=settings,
        variants=variants,
        seeds=seeds,
        records=records,
        pending=pending,
        device_name=device_name(device),
        fast_requested=requested,
        fast_unavailable=sorted(set(requested) - set(fast_params)),
    )
    results["processes"] = launch.world_size
    results["plan"] = plan
    results["phases"] = {
        "planned_in_this_call": planned_here,
        "rows": phase_times(plan or {}, ctx.timings),
    }
    results["budget"] = clock.report()
    results["achieved_epochs"] = {
        (f"{r['variant']}-seed{r['seed']}" if "variant" in r else "teacher"): r[
            "epochs"
        ]
        for r in records
        if "epochs" in r
    }
    if launch.is_main:
        save_json(out / "results.json", results)
        (out / "results.md").write_text(format_results(results) + "\n")
        results["plots"] = write_plots(out, results, data.y_test)
        results["budget"] = clock.report()  # the plots included
        save_json(out / "results.json", results)
        (out / "results.md").write_text(format_results(results) + "\n")
    launch.wait()  # the files are whole when any process returns
    return results


def _plan(
    ctx: RunContext,
    variants: list[str],
    seeds: int,
    budget: float,
    min_epochs: int,
    lockstep: bool | None,
) -> dict[str, Any]:
    """Warm up each phase, then plan the epochs to the budget (refused at
    once when the budget is spent before the warm-up could start, or by one
    of its fits)."""
    check_budget_left(budget, ctx.clock.elapsed())
    teacher = (
        ctx.teacher_weights is None
        and not (ctx.out / "teacher" / "record.json").exists()
    )
    may_lockstep = lockstep is not False and ctx.launch.accelerator is None
    costs = measure_phases(
        ctx,
        variants,
        teacher=teacher,
        lockstep=may_lockstep,
        budget=budget,
    )
    plan = plan_epochs(
        budget=budget,
        elapsed=ctx.clock.elapsed(),
        batches=costs["batches"],
        teacher=costs["teacher"],
        student=costs["student"],
        runs=len(variants) * seeds,
        seeds=seeds,
        lockstep_step_s=costs["lockstep_step_s"],
        graphs=costs["graphs"],
        min_epochs=min_epochs,
    )
    if lockstep is not None:
        plan["lockstep"] = bool(lockstep)  # as asked; the plan's costs stay
    return plan
