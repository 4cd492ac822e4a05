"""The runs of ``projkd reproduce``: the teacher phase, then each seed's students.

Every run checkpoints each epoch and is marked done by its ``record.json``,
so a call stopped on its time budget (or killed) continues where it stopped,
and a finished run is never redone.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...callbacks import ResumableCheckpoint
from ...distiller import ProjectorDistiller
from ...lockstep import EpochSeed, fit_lockstep
from ...metrics import linear_cka
from ...models import get_model
from ...teacher.inference import compute_teacher_outputs
from ...teacher.io import load_teacher
from ...teacher.training import TeacherNet
from ...training.compiling import unwrap_compiled
from ..data import Data
from ..io import read_json, save_json
from ..launch import Launch
from ..spec import build_model, model_kwargs
from ..teacher import AcceleratedTeacherNet
from .planning import (
    PLAN_FRACTION,
    STUDENT_FINAL,
    TEACHER_FINAL,
    WARMUP_EPOCHS,
    PhaseCost,
    check_budget_left,
    final_passes,
    measure_fit,
    measure_lockstep,
    warmup_rows,
)
from .training import (
    Clock,
    TeacherCheckpoint,
    TestScore,
    TimeBudget,
    curve_fields,
    run_metrics,
    save_proba,
    sha256,
)
from .variants import VARIANTS, variant_params

__all__ = [
    "GRAPHS_MODE",
    "TEACHER_SEED",
    "RunContext",
    "measure_phases",
    "run_all",
]

#: the compile mode that replays a student's training step as CUDA graphs
#: (never "max-autotune" in a timed window: its compile time)
GRAPHS_MODE = "reduce-overhead"
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
class RunContext:
    """What every run of one :func:`~projkd.experiments.reproduce` call shares.

    Attributes
    ----------
    out : Path
        The output folder (``teacher/``, ``runs/<variant>-seed<s>/``).
    data : Data
    clock : Clock
        The call's time budget.
    device : str
        This process's device.
    epochs : int
        Of the teacher and of each student.
    teacher_arch, student_arch : str
        :mod:`projkd.models` names of the pair.
    teacher_weights : str, Path or None
        A given teacher's ``state_dict``; None: train one.
    fast : dict
        The fast settings applied.
    recipe : callable
        Network name -> estimator parameters (the recipe, deviations applied).
    equal_widths : bool
        Whether the pair's feature widths are equal (``fd0`` possible).
    verbose : bool
        A line per epoch on standard error.
    lockstep : bool, default=False
        Train each seed's variants together.
    graphs : bool, default=False
        Compile the students' training steps with :data:`GRAPHS_MODE` (CUDA
        graphs), where the fast settings compile.
    launch : Launch
        This process's launch (parallel or not).
    epoch_test_images : int or None, default=None
        Score each epoch but the last on a fixed subset of this many test
        images; None: all of them every epoch.
    timings : dict
        Filled by the runs: the seconds of each phase this call ran
        (``"teacher"``, ``"<variant>-seed<s>"``, ``"lockstep-seed<s>"``), its
        ``fit_s`` (building and training) and ``final_s`` (evaluation).
    """

    out: Path
    data: Data
    clock: Clock
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
    graphs: bool = False
    epoch_test_images: int | None = None
    timings: dict[str, dict[str, float]] = field(default_factory=dict)

    def say(self, text: str) -> None:
        """A progress line, ``[reproduce] text``, on standard error (when
        ``verbose``, from the main process)."""
        if self.verbose and self.launch.is_main:
            print(f"[reproduce] {text}", file=sys.stderr, flush=True)

    def timed(self, phase: str, part: str, started: float) -> None:
        """Record that ``part`` of ``phase`` ran from ``started`` until now
        (the clock's time)."""
        seconds = self.clock.timer() - started
        self.timings.setdefault(phase, {})[part] = round(seconds, 3)

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


def _teacher_phase(ctx: RunContext) -> tuple[dict[str, Any], torch.nn.Module] | None:
    """The teacher and its record: loaded when done, else given or trained."""
    folder = ctx.out / "teacher"
    done = folder / "record.json"
    if done.exists():
        record = read_json(done, "the teacher's record", keys=("weights",))
        weights = ctx.out / record["weights"]  # relative to out, or absolute
        if record.get("source") == "given" and ctx.teacher_weights is not None:
            weights = Path(ctx.teacher_weights)  # the same (settings), perhaps moved
        return record, _load(ctx, weights)
    if ctx.clock.out_of_time():
        return None
    record = {"model": f"teacher ({ctx.teacher_arch})"}
    if ctx.teacher_weights is not None:
        weights = Path(ctx.teacher_weights).resolve()
        record.update(source="given", weights=str(weights))
    else:
        started = ctx.clock.timer()
        result = _train_teacher(ctx, folder)
        ctx.timed("teacher", "fit_s", started)
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
    started = ctx.clock.timer()  # the evaluation: a unit of work for the clock
    ctx.say(f"teacher: evaluation ({_sizes(ctx.data)})")
    teacher = _load(ctx, weights)  # trained or not, students see the saved weights
    record["sha256"] = sha256(weights)
    data = ctx.data
    proba = {
        name: torch.softmax(_logits(teacher, X, ctx.device), dim=1).numpy()
        for name, X in (("train", data.X_train), ("test", data.X_test))
    }
    record.update(run_metrics(proba["train"], data.y_train, proba["test"], data.y_test))
    record["cka"] = 1.0
    if ctx.launch.is_main:
        save_proba(folder, proba["test"])
        save_json(done, record)
    ctx.clock.done(ctx.clock.timer() - started)
    ctx.timed("teacher", "final_s", started)
    return record, teacher


def _load(ctx: RunContext, weights: Path) -> torch.nn.Module:
    model = build_model(
        ctx.teacher_arch, ctx.data, seed=TEACHER_SEED, device=ctx.device
    )
    return load_teacher(model, weights, device=ctx.device)


def _train_teacher(
    ctx: RunContext, folder: Path
) -> tuple[torch.nn.Module, dict[str, Any]] | None:
    """The trained teacher and its training curve; None if stopped early."""
    net = _teacher_net(ctx, folder)
    net.fit(ctx.data.X_train, ctx.data.y_train)
    if len(net.history) < ctx.epochs:
        return None  # stopped on the budget; resumes on the next call
    module: torch.nn.Module = net.module_
    curve = curve_fields(net.history, len(ctx.data.y_train))
    return unwrap_compiled(module).eval(), curve


def _teacher_net(ctx: RunContext, folder: Path) -> TeacherNet:
    """The (unfitted) teacher's net, with its callbacks."""
    params = ctx.recipe(ctx.teacher_arch)
    callbacks = _callbacks(
        ctx,
        params.pop("callbacks", []),
        folder,
        TEACHER_SEED,
        "teacher",
        checkpoint=TeacherCheckpoint,
    )
    kwargs = ctx.estimator_kwargs(params)
    kwargs.pop("data_device", None)  # a TeacherNet slices host arrays
    net_class: type[TeacherNet] = TeacherNet
    if ctx.launch.accelerator is not None:
        net_class = AcceleratedTeacherNet
    return net_class(
        **_factory(ctx.teacher_arch, ctx.data, "module"),
        max_epochs=ctx.epochs,
        classes=np.arange(ctx.data.n_classes),
        train_split=None,
        verbose=0,
        callbacks=callbacks,
        random_state=TEACHER_SEED,  # the network, each epoch's order: resumable
        **kwargs,
    )


def _callbacks(
    ctx: RunContext,
    recipe_callbacks: list[Any],
    folder: Path,
    seed: int,
    label: str,
    checkpoint: type[ResumableCheckpoint] = ResumableCheckpoint,
) -> list[Any]:
    # order matters: the test score is recorded before the checkpoint saves the
    # history; the checkpoint loads before, and saves before, the lr scheduler
    # steps (skorch rebuilds the scheduler from the history's length); the
    # budget stops only after the epoch is saved
    return [
        (
            "test_score",
            TestScore(
                ctx.data.X_test,
                ctx.data.y_test,
                label,
                ctx.verbose and ctx.launch.is_main,
                ctx.epoch_test_images,
            ),
        ),
        ("checkpoint", checkpoint(dirname=str(folder / "ckpt"))),
        *recipe_callbacks,
        ("epoch_seed", EpochSeed(seed)),
        ("time_budget", TimeBudget(ctx.clock)),
    ]


def _folder(ctx: RunContext, variant: str, seed: int) -> Path:
    return ctx.out / "runs" / f"{variant}-seed{seed}"


def _done(ctx: RunContext, variant: str, seed: int) -> dict[str, Any] | None:
    done = _folder(ctx, variant, seed) / "record.json"
    if not done.exists():
        return None
    record: dict[str, Any] = read_json(done, "a run's record", keys=("variant",))
    return record


def _student(
    ctx: RunContext, teacher: torch.nn.Module, variant: str, seed: int
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
    wanted = variant_params(variant, ctx.teacher_arch, ctx.student_arch)
    if wanted["feature_weight"] == 0 and not ctx.equal_widths:
        wanted["n_projectors"] = 1  # unused; 0 needs equal widths
    cls: type[Any] = ProjectorDistiller
    if ctx.launch.accelerator is not None:
        from ...parallel import AcceleratedProjectorDistiller

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
        **wanted,
        **ctx.estimator_kwargs(params),
        **({"compile__mode": GRAPHS_MODE} if ctx.graphs else {}),
    )


def _finish(
    ctx: RunContext, estimator: ProjectorDistiller, variant: str, seed: int
) -> dict[str, Any] | None:
    """Evaluate a fitted run and mark it done; None if it has not finished."""
    if len(estimator.history) < ctx.epochs or ctx.clock.out_of_time():
        return None  # stopped on the budget (or no time to evaluate): resumes
    data = ctx.data
    started = ctx.clock.timer()
    ctx.say(f"{variant} seed {seed}: evaluation ({_sizes(data)}, CKA)")
    proba_test = estimator.predict_proba(data.X_test)
    record: dict[str, Any] = {"model": variant, "variant": variant, "seed": seed}
    record.update(
        run_metrics(
            estimator.predict_proba(data.X_train), data.y_train, proba_test, data.y_test
        )
    )
    record["cka"] = linear_cka(
        estimator.transform(data.X_test), estimator.transform_teacher(data.X_test)
    )
    record.update(curve_fields(estimator.history, len(data.y_train)))
    record["params"] = _variant_params(estimator)
    record["lockstep"] = ctx.lockstep
    folder = _folder(ctx, variant, seed)
    if ctx.launch.is_main:
        save_proba(folder, proba_test)
        save_json(folder / "record.json", record)
    ctx.clock.done(ctx.clock.timer() - started)
    ctx.timed(f"{variant}-seed{seed}", "final_s", started)
    return record


def _sizes(data: Data) -> str:
    return f"{len(data.y_train)} training and {len(data.y_test)} test images"


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
    params = {name: getattr(estimator, name) for name in names}
    for name in ("logit_loss", "feature_loss", "projector"):
        # as text: DKDLoss(...), "srd", a class or function by its name
        value = getattr(estimator, name)
        params[name] = getattr(value, "__name__", str(value))
    return params


def _seed_runs(
    ctx: RunContext, teacher: torch.nn.Module, variants: list[str], seed: int
) -> dict[str, dict[str, Any] | None]:
    """The records of one seed's variants (None: not finished yet)."""
    records = {v: _done(ctx, v, seed) for v in variants}
    todo = [v for v in variants if records[v] is None]
    if not todo or ctx.clock.out_of_time():
        return records
    data = ctx.data
    if ctx.lockstep:
        started = ctx.clock.timer()
        estimators = [_student(ctx, teacher, v, seed) for v in todo]
        fit_lockstep(estimators, data.X_train, data.y_train)
        ctx.timed(f"lockstep-seed{seed}", "fit_s", started)
        for variant, estimator in zip(todo, estimators, strict=True):
            records[variant] = _finish(ctx, estimator, variant, seed)
        return records
    for variant in todo:
        if ctx.clock.out_of_time():
            break
        started = ctx.clock.timer()
        estimator = _student(ctx, teacher, variant, seed)
        estimator.fit(data.X_train, data.y_train)
        ctx.timed(f"{variant}-seed{seed}", "fit_s", started)
        records[variant] = _finish(ctx, estimator, variant, seed)
    return records


def _logits(model: torch.nn.Module, X: Any, device: str) -> torch.Tensor:
    """``model``'s float32 logits for ``X``, computed in batches on ``device``."""
    return compute_teacher_outputs(model, X, device=device).logits.float()


def measure_phases(
    ctx: RunContext,
    variants: list[str],
    *,
    teacher: bool,
    lockstep: bool,
    budget: float | None = None,
) -> dict[str, Any]:
    """The warm-up of ``--epochs auto`` (:mod:`.planning`): throwaway fits of
    a few batches of the teacher (when ``teacher``), of the costliest of
    ``variants`` with the untrained teacher and, with ``lockstep``, of their
    lockstep group, on this device, with the runs' own estimators and
    per-epoch test evaluation (no checkpoint files: one save is timed).
    With a ``budget``, a fit that leaves none of it ends the warm-up with a
    refusal (:func:`~.planning.check_budget_left`), and the lockstep group is
    not measured (nor chosen) when its fit, as long as the student's times
    the variants, would not fit in what is left.

    Returns
    -------
    costs : dict
        ``batches`` (per epoch), ``teacher`` and ``student``
        (:class:`~.planning.PhaseCost`, the teacher's None unless
        ``teacher``), ``graphs`` (the student with its step replayed as
        CUDA graphs, :data:`GRAPHS_MODE`; None unless compiled on CUDA),
        ``lockstep_step_s`` (None unless ``lockstep``).
    """
    data = ctx.data
    batch = ctx.estimator_kwargs(ctx.recipe(ctx.student_arch))["batch_size"]
    batches = -(-len(data.y_train) // batch)
    few = max(2, min(batches // 2, 20))
    X, y = warmup_rows(data.X_train, data.y_train, few, batch)
    few = max(1, min(few, len(y) // batch))
    untrained = build_model(
        ctx.teacher_arch, data, seed=TEACHER_SEED, device=ctx.device
    ).eval()
    # the costliest variant: the teacher's outputs, then the most projectors
    costliest = max(
        variants,
        key=lambda v: (
            bool(VARIANTS[v]["kd_weight"] or VARIANTS[v]["feature_weight"]),
            bool(VARIANTS[v]["feature_weight"]) * VARIANTS[v]["n_projectors"],
        ),
    )
    costs: dict[str, Any] = {"batches": batches, "teacher": None}
    with tempfile.TemporaryDirectory() as folder:
        warm = dataclasses.replace(
            ctx,
            out=Path(folder),
            clock=Clock(None, timer=ctx.clock.timer),
            epochs=1,
            verbose=False,
            timings={},
        )

        def student(variant: str, graphs: bool = False) -> Any:
            run = dataclasses.replace(warm, graphs=graphs)
            est = _student(run, untrained, variant, 0)
            return est.set_params(callbacks__checkpoint=None)

        def measure(make: Callable[[], Any], final: Any) -> PhaseCost:
            # the whole sets' sizes: the warm-up fits only a few batches
            passes = final_passes(final, len(data.y_train), len(data.y_test))
            cost = measure_fit(
                make, X, y, few, batch, data.X_test, passes, ctx.clock.timer
            )
            if budget is not None:
                check_budget_left(budget, ctx.clock.elapsed(), warming_up=True)
            return cost

        warming = f"--epochs auto: warm-up, {WARMUP_EPOCHS} epochs of {few} batches"
        if teacher:
            ctx.say(f"{warming} of the teacher")
            costs["teacher"] = measure(
                lambda: _teacher_net(warm, warm.out / "teacher").set_params(
                    callbacks__checkpoint=None
                ),
                TEACHER_FINAL,
            )
        ctx.say(f"{warming} of the student ({costliest})")
        started = ctx.clock.timer()
        costs["student"] = measure(lambda: student(costliest), STUDENT_FINAL)
        group_s = len(variants) * (ctx.clock.timer() - started)
        if budget is not None:
            lockstep = lockstep and ctx.clock.elapsed() + group_s < (
                PLAN_FRACTION * budget
            )
        costs["graphs"] = None
        compiled = ctx.estimator_kwargs({}).get("compile")
        if compiled and torch.device(ctx.device).type == "cuda":
            ctx.say(f"{warming} of the student as CUDA graphs")
            costs["graphs"] = measure(
                lambda: student(costliest, graphs=True), STUDENT_FINAL
            )
        costs["lockstep_step_s"] = None
        if lockstep and len(variants) > 1:
            ctx.say(f"{warming} of the lockstep group ({len(variants)} students)")
            costs["lockstep_step_s"] = measure_lockstep(
                lambda: [student(v) for v in variants], X, y, few, batch
            )
    return costs


def run_all(
    ctx: RunContext, variants: list[str], seeds: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """The teacher, then every variant of every seed, as far as the budget goes.

    Returns
    -------
    records : list of dict
        The finished runs' records, the teacher's first.
    pending : list of str
        The runs not finished yet (``"teacher"``, ``"<variant>-seed<s>"``).
    """
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
