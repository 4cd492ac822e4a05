"""What a network costs to run: parameters, multiply-accumulates, measured speed.

Distillation is done to deploy a cheaper network, so the question after "how
accurate" is "how much cheaper". :func:`model_cost` answers it for one
network: its parameters, its multiply-accumulates (MACs) per image, counted
with :class:`torch.utils.flop_counter.FlopCounterMode`, and its inference
latency and throughput *measured* on a device. :func:`cost_sentence` turns a
teacher's and a student's figures into "student: 6.0x fewer MACs, 4.1x faster
at batch 1 on cpu, -3.2 points".

MACs are FLOPs / 2: PyTorch's counter reports two FLOPs (a multiply and an
add) per multiply-accumulate of convolutions, matrix products and attention,
and does not count element-wise work (BatchNorm, activations, pooling, the
residual additions), which is small beside it in these networks.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import InputError

__all__ = [
    "ModelCost",
    "cost_sentence",
    "count_macs",
    "count_parameters",
    "measure_speed",
    "model_cost",
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


def measure_speed(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    batch_size: int = 1,
    warmup: int = 5,
    repeats: int = 20,
) -> dict[str, Any]:
    """Measured inference latency and throughput, where the model's parameters are.

    ``warmup`` forward passes (not timed) let caches, allocators and lazy
    initialisation settle; then each of ``repeats`` passes is timed
    (synchronising CUDA around it) and the median is kept, which ignores
    occasional hiccups of a shared machine.

    Parameters
    ----------
    model : torch.nn.Module
        Run in eval mode without gradients; its modes are restored afterwards.
    input_shape : sequence of int
        Shape of one sample, e.g. ``(3, 32, 32)``.
    batch_size : int, default=1
    warmup : int, default=5
    repeats : int, default=20

    Returns
    -------
    speed : dict
        ``latency_ms`` (median per batch), ``images_per_s``, ``batch_size``
        and ``device``.
    """
    if repeats < 1 or warmup < 0:
        raise InputError(
            f"repeats must be at least 1 and warmup at least 0; got repeats={repeats}"
            f" and warmup={warmup}."
        )
    x = _example(model, input_shape, batch_size)
    # Subnormal floats (tiny weights of an under-trained network) run up to
    # hundreds of times slower on x86 CPUs; deployed models are served with
    # them flushed to zero, so the timing is too. Restored afterwards.
    flush = x.device.type == "cpu" and torch.set_flush_denormal(True)
    try:
        with _EvalMode(model) as net:
            times = _time(net, x, warmup, repeats)
    finally:
        if flush:
            torch.set_flush_denormal(False)
    median = statistics.median(times)
    return {
        "latency_ms": 1000 * median,
        "images_per_s": batch_size / median,
        "batch_size": batch_size,
        "device": str(x.device),
    }


def _time(net: nn.Module, x: Tensor, warmup: int, repeats: int) -> list[float]:
    """Seconds per call of ``net(x)``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        net(x)
    _synchronize(x.device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        net(x)
        _synchronize(x.device)
        times.append(time.perf_counter() - start)
    return times


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
    speed: dict[str, Any] = {}
    if measure:
        speed = measure_speed(
            model, input_shape, batch_size=batch_size, warmup=warmup, repeats=repeats
        )
    return ModelCost(
        params=count_parameters(model), macs=count_macs(model, input_shape), **speed
    )


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
        ``batch_size`` and ``device`` (as :func:`projkd.analysis.compare`
        returns with ``cost=True``); ``test_acc`` (a fraction) adds the
        accuracy difference in points.
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
        speed = _ratio(t["latency_ms"], s["latency_ms"], "faster", "slower")
        parts.append(f"{speed} at batch {s.get('batch_size')} on {s.get('device')}")
    if t.get("test_acc") is not None and s.get("test_acc") is not None:
        parts.append(f"{100 * (s['test_acc'] - t['test_acc']):+.1f} points")
    return f"{name}: " + ", ".join(p for p in parts if p)
