"""What a network costs to run: parameters, multiply-accumulates, measured speed.

Distillation is done to deploy a cheaper network, so the question after "how
accurate" is "how much cheaper". :func:`model_cost` answers it for one
network: its parameters, its multiply-accumulates (MACs) per image, counted
with :class:`torch.utils.flop_counter.FlopCounterMode`, and its inference
latency and throughput *measured* on a device. :func:`measure_speeds` times
several networks the way the project's benchmarks compare them: interleaved,
repeated, the median kept and the spread reported. :func:`cost_sentence`
turns a teacher's and a student's figures into "student: 6.0x fewer MACs,
4.1x faster at batch 1 on cpu, -3.2 points", or says the latency is noisy
when its spread is too wide to call a ratio.

MACs are FLOPs / 2: PyTorch's counter reports two FLOPs (a multiply and an
add) per multiply-accumulate of convolutions, matrix products and attention,
and does not count element-wise work (BatchNorm, activations, pooling, the
residual additions), which is small beside it in these networks.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import InputError

__all__ = [
    "NOISY_SPREAD",
    "ModelCost",
    "cost_sentence",
    "count_macs",
    "count_parameters",
    "is_noisy",
    "measure_speed",
    "median_interval",
    "measure_speeds",
    "model_cost",
    "model_costs",
]


@dataclass(frozen=True)
class ModelCost:
    """The cost of running one network.

    Attributes
    ----------
    params : int
        Number of parameters.
    macs : int
        Multiply-accumulates per image (FLOPs / 2).
    latency_ms : float or None
        Median time of one forward pass over a batch of ``batch_size``, in
        milliseconds; ``None`` when not measured.
    latency_spread : float or None
        How far the median can be trusted: the width of its 95% confidence
        interval (from the order statistics of the timed passes) over the
        median; :func:`is_noisy` above :data:`NOISY_SPREAD`. None for a
        single pass.
    images_per_s : float or None
        ``batch_size`` / median latency.
    batch_size : int or None
        Batch size of the speed measurement.
    device : str or None
        Where the speed was measured (e.g. ``"cpu"``, ``"cuda:0"``).
    """

    params: int
    macs: int
    latency_ms: float | None = None
    latency_spread: float | None = None
    images_per_s: float | None = None
    batch_size: int | None = None
    device: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict (the columns :func:`projkd.analysis.compare` adds)."""
        return asdict(self)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model`` (buffers such as BatchNorm statistics
    excluded).

    Examples
    --------
    >>> count_parameters(nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in model.parameters())


def _device_of(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _example(
    model: nn.Module, input_shape: Sequence[int], batch_size: int
) -> torch.Tensor:
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s <= 0 for s in shape):
        raise InputError(
            "input_shape must be the shape of one sample, e.g. (3, 32, 32); got "
            f"{tuple(input_shape)!r}."
        )
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1; got {batch_size}.")
    return torch.randn((batch_size, *shape), device=_device_of(model))


class _EvalMode:
    """Eval mode and no gradients for the duration; modes restored after."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> nn.Module:
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.grad = torch.no_grad()
        self.grad.__enter__()
        return self.model.eval()

    def __exit__(self, *exc: Any) -> None:
        self.grad.__exit__(*exc)
        for module, training in self.modes:
            module.training = training


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass per image.

    Counted by :class:`torch.utils.flop_counter.FlopCounterMode` on a batch of
    one, in eval mode, where the model's parameters are; MACs = FLOPs / 2.
    Element-wise operations are not counted (see :mod:`projkd.analysis.cost`).

    Parameters
    ----------
    model : torch.nn.Module
    input_shape : sequence of int
        Shape of one sample, e.g. ``(3, 32, 32)``.

    Returns
    -------
    macs : int

    Examples
    --------
    >>> count_macs(nn.Linear(3, 2), (3,))
    6
    """
    x = _example(model, input_shape, 1)
    counter = FlopCounterMode(display=False)
    with _EvalMode(model) as net, counter:
        net(x)
    return counter.get_total_flops() // 2


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: A latency whose median's 95% interval spans more than this fraction of it
#: (the median known only to within about +-25%; a ratio of two such to
#: within about +-35%) is too noisy to compare: tables say "noisy" instead of
#: a ratio.
NOISY_SPREAD = 0.5


def is_noisy(record: Mapping[str, Any] | ModelCost) -> bool:
    """Whether a measured latency is too noisy to compare (its spread, the
    width of its median's 95% interval over the median, exceeds
    :data:`NOISY_SPREAD`).

    Examples
    --------
    >>> is_noisy({"latency_ms": 2.0, "latency_spread": 0.6})
    True
    >>> is_noisy({"latency_ms": 2.0, "latency_spread": 0.05})
    False
    """
    r = record.as_dict() if isinstance(record, ModelCost) else record
    spread = r.get("latency_spread")
    return spread is not None and spread > NOISY_SPREAD


@contextlib.contextmanager
def _cpu_timing(on_cpu: bool) -> Iterator[None]:
    """One intra-op thread and subnormals flushed while timing on the CPU;
    both restored afterwards."""
    if not on_cpu:
        yield
        return
    # Subnormal floats (tiny weights of an under-trained network) run up to
    # hundreds of times slower on x86 CPUs; deployed models are served with
    # them flushed to zero, so the timing is too.
    flush = torch.set_flush_denormal(True)
    # A second intra-op thread that another job keeps waiting turns a
    # 0.1 ms pass into 50 ms, for one network and not the next.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if flush:
            torch.set_flush_denormal(False)


def measure_speeds(
    models: Mapping[str, nn.Module],
    input_shape: Sequence[int],
    *,
    batch_size: int = 1,
    warmup: int = 5,
    repeats: int = 20,
    timer: Callable[[], float] | None = None,
) -> dict[str, dict[str, Any]]:
    """Measured latency of several networks, side by side, with its spread.

    The networks are timed interleaved, as the project's benchmarks time
    what they compare: after ``warmup`` untimed passes of each, every one of
    ``repeats`` rounds times one pass of every network, in an order rotated
    from round to round, so that a change in the machine's load falls on all
    of them alike. Each network's figure is the median of its passes, and
    its spread the width of the median's 95% confidence interval (from the
    order statistics of the passes; with 20 passes about their
    interquartile range) over the median: above :data:`NOISY_SPREAD`
    (:func:`is_noisy`), too noisy to compare.

    On the CPU the passes run on one intra-op thread and are timed as the
    thread's CPU time (:func:`time.thread_time`), which another job on the
    machine disturbs far less than wall-clock time; subnormal floats are
    flushed to zero (as in deployment). On CUDA each pass is timed in
    wall-clock time between two synchronisations.

    Parameters
    ----------
    models : mapping of str to torch.nn.Module
        Each run where its parameters are, in eval mode without gradients;
        their modes are restored afterwards.
    input_shape : sequence of int
        Shape of one sample, e.g. ``(3, 32, 32)``.
    batch_size : int, default=1
    warmup : int, default=5
    repeats : int, default=20
    timer : callable or None, default=None
        Seconds, as :mod:`timeit`'s ``timer``; None: the thread's CPU time
        on the CPU, :func:`time.perf_counter` on CUDA.

    Returns
    -------
    speeds : dict
        Per network: ``latency_ms`` (median per batch), ``latency_spread``,
        ``images_per_s``, ``batch_size`` and ``device``.

    Examples
    --------
    >>> speeds = measure_speeds({"a": nn.Linear(3, 2), "b": nn.Linear(3, 9)}, (3,))
    >>> sorted(speeds), speeds["a"]["batch_size"], speeds["a"]["latency_ms"] > 0
    (['a', 'b'], 1, True)
    """
    if repeats < 1 or warmup < 0:
        raise InputError(
            f"repeats must be at least 1 and warmup at least 0; got repeats={repeats}"
            f" and warmup={warmup}."
        )
    examples = {
        name: _example(model, input_shape, batch_size) for name, model in models.items()
    }
    devices = {x.device for x in examples.values()}
    on_cpu = any(device.type == "cpu" for device in devices)
    if timer is None:
        cpu_only = all(device.type == "cpu" for device in devices)
        timer = time.thread_time if cpu_only else time.perf_counter
    names = list(models)
    times: dict[str, list[float]] = {name: [] for name in names}
    with _cpu_timing(on_cpu), contextlib.ExitStack() as stack:
        nets = {name: stack.enter_context(_EvalMode(models[name])) for name in names}
        for name in names:
            for _ in range(warmup):
                nets[name](examples[name])
        for device in devices:
            _synchronize(device)
        for round_ in range(repeats):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                x = examples[name]
                start = timer()
                nets[name](x)
                _synchronize(x.device)
                times[name].append(timer() - start)
    return {
        name: _summary(times[name], batch_size, examples[name].device) for name in names
    }


def median_interval(times: Sequence[float]) -> tuple[float, float]:
    """The 95% confidence interval of the median of ``times``, from their
    order statistics (distribution-free; the whole range below 6 values).

    Examples
    --------
    >>> median_interval([float(i) for i in range(1, 21)])
    (5.0, 16.0)
    """
    ordered = sorted(times)
    n = len(ordered)
    half = 1.96 * math.sqrt(n) / 2
    low = max(math.floor(n / 2 - half), 1)  # 1-based ranks
    high = min(math.ceil(n / 2 + 1 + half), n)
    return ordered[low - 1], ordered[high - 1]


def _summary(
    times: Sequence[float], batch_size: int, device: torch.device
) -> dict[str, Any]:
    """A network's median latency, its spread and throughput."""
    median = max(statistics.median(times), 1e-9)  # a coarse clock may read 0
    low, high = median_interval(times)
    return {
        "latency_ms": 1000 * median,
        "latency_spread": (high - low) / median if len(times) > 1 else None,
        "images_per_s": batch_size / median,
        "batch_size": batch_size,
        "device": str(device),
    }


def measure_speed(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    batch_size: int = 1,
    warmup: int = 5,
    repeats: int = 20,
    timer: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """Measured inference latency and throughput, where the model's parameters are.

    :func:`measure_speeds` for one network: ``warmup`` untimed passes, then
    the median of ``repeats`` timed ones, and their spread.

    Parameters
    ----------
    model : torch.nn.Module
        Run in eval mode without gradients; its modes are restored afterwards.
    input_shape : sequence of int
        Shape of one sample, e.g. ``(3, 32, 32)``.
    batch_size : int, default=1
    warmup : int, default=5
    repeats : int, default=20
    timer : callable or None, default=None
        See :func:`measure_speeds`.

    Returns
    -------
    speed : dict
        ``latency_ms`` (median per batch), ``latency_spread`` (the width of
        the median's 95% interval over it), ``images_per_s``, ``batch_size``
        and ``device``.
    """
    return measure_speeds(
        {"model": model},
        input_shape,
        batch_size=batch_size,
        warmup=warmup,
        repeats=repeats,
        timer=timer,
    )["model"]


def model_costs(
    models: Mapping[str, nn.Module],
    input_shape: Sequence[int],
    *,
    measure: bool = True,
    batch_size: int = 1,
    warmup: int = 5,
    repeats: int = 20,
    timer: Callable[[], float] | None = None,
) -> dict[str, ModelCost]:
    """Parameters, MACs per image and speed of several networks, timed side
    by side (:func:`measure_speeds`).

    Parameters
    ----------
    models : mapping of str to torch.nn.Module
    input_shape : sequence of int
    measure : bool, default=True
        Time the networks; ``False`` counts only.
    batch_size, warmup, repeats : int
    timer : callable or None, default=None
        See :func:`measure_speeds`.

    Returns
    -------
    costs : dict of str to ModelCost
    """
    speeds: dict[str, dict[str, Any]] = {}
    if measure:
        speeds = measure_speeds(
            models,
            input_shape,
            batch_size=batch_size,
            warmup=warmup,
            repeats=repeats,
            timer=timer,
        )
    return {
        name: ModelCost(
            params=count_parameters(model),
            macs=count_macs(model, input_shape),
            **speeds.get(name, {}),
        )
        for name, model in models.items()
    }


def model_cost(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    measure: bool = True,
    batch_size: int = 1,
    warmup: int = 5,
    repeats: int = 20,
) -> ModelCost:
    """Parameters, MACs per image and (optionally) measured speed of ``model``.

    Parameters
    ----------
    model : torch.nn.Module
        Measured where its parameters are.
    input_shape : sequence of int
        Shape of one sample, e.g. ``(3, 32, 32)``.
    measure : bool, default=True
        Time the model (see :func:`measure_speed`); ``False`` counts only.
    batch_size, warmup, repeats : int
        See :func:`measure_speed`.

    Returns
    -------
    cost : ModelCost

    Examples
    --------
    >>> from projkd.models import get_model
    >>> cost = model_cost(get_model("resnet8"), (3, 32, 32), measure=False)
    >>> cost.params, round(cost.macs / 1e6, 1)
    (83892, 12.5)
    """
    return model_costs(
        {"model": model},
        input_shape,
        measure=measure,
        batch_size=batch_size,
        warmup=warmup,
        repeats=repeats,
    )["model"]


def _ratio(teacher: float, student: float, fewer: str, more: str) -> str:
    if student <= 0 or teacher <= 0:
        return ""
    if teacher >= student:
        return f"{teacher / student:.1f}x {fewer}"
    return f"{student / teacher:.1f}x {more}"


def cost_sentence(
    teacher: Mapping[str, Any] | ModelCost,
    student: Mapping[str, Any] | ModelCost,
    *,
    name: str = "student",
) -> str:
    """A student's cost and accuracy relative to its teacher, in one line.

    Parameters
    ----------
    teacher, student : mapping or ModelCost
        Records with ``macs`` and, if measured, ``latency_ms``,
        ``latency_spread``, ``batch_size`` and ``device`` (as
        :func:`projkd.analysis.compare` returns with ``cost=True``);
        ``test_acc`` (a fraction) adds the accuracy difference in points.
        When either latency is too noisy to compare (:func:`is_noisy`), the
        sentence says so instead of giving a speed ratio.
    name : str, default="student"

    Returns
    -------
    sentence : str
        E.g. ``"student: 6.0x fewer MACs, 4.1x faster at batch 1 on cpu,
        -3.2 points"``.

    Examples
    --------
    >>> teacher = {"macs": 6e8, "latency_ms": 8.2, "batch_size": 1,
    ...            "device": "cpu", "test_acc": 0.79}
    >>> student = {"macs": 1e8, "latency_ms": 2.0, "batch_size": 1,
    ...            "device": "cpu", "test_acc": 0.758}
    >>> cost_sentence(teacher, student)
    'student: 6.0x fewer MACs, 4.1x faster at batch 1 on cpu, -3.2 points'
    """
    t = teacher.as_dict() if isinstance(teacher, ModelCost) else dict(teacher)
    s = student.as_dict() if isinstance(student, ModelCost) else dict(student)
    parts = []
    if t.get("macs") and s.get("macs"):
        parts.append(_ratio(t["macs"], s["macs"], "fewer MACs", "more MACs"))
    if t.get("latency_ms") and s.get("latency_ms"):
        where = f"at batch {s.get('batch_size')} on {s.get('device')}"
        if is_noisy(t) or is_noisy(s):
            spreads = "/".join(
                f"{100 * r['latency_spread']:.0f}%" for r in (t, s) if is_noisy(r)
            )
            parts.append(f"latency noisy {where} (spread {spreads}; no ratio)")
        else:
            speed = _ratio(t["latency_ms"], s["latency_ms"], "faster", "slower")
            parts.append(f"{speed} {where}")
    if t.get("test_acc") is not None and s.get("test_acc") is not None:
        parts.append(f"{100 * (s['test_acc'] - t['test_acc']):+.1f} points")
    return f"{name}: " + ", ".join(p for p in parts if p)
