"""Mixed precision for the distillation step: autocast and gradient scaling.

``mixed_precision`` takes the names Accelerate uses: ``None`` (float32),
``"bf16"`` (bfloat16 autocast: float32's range, no scaling needed) or
``"fp16"`` (float16 autocast with a :class:`torch.amp.GradScaler`, which
scales the loss so small gradients survive float16 and skips the optimizer
step when a gradient overflows). The networks and projectors run under
:func:`autocast`; the loss terms are computed in float32 by the caller.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from skorch.dataset import unpack_data
from torch import Tensor

__all__ = [
    "MIXED_PRECISION",
    "ScaledStepMixin",
    "autocast",
    "autocast_dtype",
    "float32",
    "map_tensors",
    "grad_scaler",
    "scaled_step",
]

MIXED_PRECISION: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def autocast_dtype(mixed_precision: str | None) -> torch.dtype | None:
    """The autocast dtype of a ``mixed_precision`` setting (None for float32).

    Raises
    ------
    ValueError
        If ``mixed_precision`` is not None, ``"bf16"`` or ``"fp16"``.

    Examples
    --------
    >>> autocast_dtype("bf16")
    torch.bfloat16
    """
    if mixed_precision is None:
        return None
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(
            f"mixed_precision={mixed_precision!r} is not known; use None, 'bf16' "
            "or 'fp16'."
        )
    return MIXED_PRECISION[mixed_precision]


def map_tensors(function: Any, value: Any) -> Any:
    """``value`` with ``function`` applied to each of its tensors: a tensor,
    and tuples (NamedTuples too), lists and plain dicts of them; anything
    else (a ``ModelOutput``, None) as it is."""
    if isinstance(value, Tensor):
        return function(value)
    if isinstance(value, tuple | list):
        items = [map_tensors(function, item) for item in value]
        if hasattr(value, "_fields"):  # a NamedTuple
            return type(value)(*items)
        return type(value)(items)
    if type(value) is dict:
        return {key: map_tensors(function, item) for key, item in value.items()}
    return value


def float32(output: Any) -> Any:
    """``output`` with its half-precision tensors cast to float32
    (:func:`map_tensors`)."""
    if isinstance(output, Tensor) and output.dtype not in _HALF_DTYPES:
        return output  # the common case, asked at every step
    return map_tensors(_to_float32, output)


def _to_float32(tensor: Tensor) -> Tensor:
    return tensor.float() if tensor.dtype in _HALF_DTYPES else tensor


_HALF_DTYPES = (torch.float16, torch.bfloat16)


def device_type(device: Any) -> str:
    """``"cuda"``, ``"cpu"``, ... of a device given as a string, a
    ``torch.device`` or None (the CPU)."""
    return torch.device(device if device is not None else "cpu").type


def autocast(device: Any, mixed_precision: str | None) -> Any:
    """A context running eligible ops at ``mixed_precision`` on ``device``.

    A no-op context for ``mixed_precision=None``.

    Parameters
    ----------
    device : str, torch.device or None
    mixed_precision : {None, "bf16", "fp16"}

    Examples
    --------
    >>> import torch
    >>> with autocast("cpu", "bf16"):
    ...     torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype
    torch.bfloat16
    """
    dtype = autocast_dtype(mixed_precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type(device), dtype=dtype)


def grad_scaler(device: Any, mixed_precision: str | None) -> Any:
    """A :class:`torch.amp.GradScaler` for ``"fp16"``, else None.

    bfloat16 has float32's exponent range, so its gradients do not underflow
    and need no scaling.
    """
    if mixed_precision != "fp16":
        return None
    return torch.amp.GradScaler(device_type(device))


def scaled_step(net: Any, scaler: Any, batch: Any) -> None:
    """The optimizer step of a skorch ``net`` whose loss ``scaler`` scaled
    (the backward pass done): gradients unscaled, then ``on_grad_computed``
    (so clipping callbacks see true values), then each optimizer's step,
    skipped by the scaler when a gradient overflowed."""
    from skorch.utils import TeeGenerator

    optimizers = [getattr(net, name + "_") for name in net._optimizers]
    for optimizer in optimizers:
        scaler.unscale_(optimizer)
    net.notify(
        "on_grad_computed",
        named_parameters=TeeGenerator(net.get_all_learnable_params()),
        batch=batch,
        training=True,
    )
    for optimizer in optimizers:
        scaler.step(optimizer)
    scaler.update()


def check_supported(device: Any, mixed_precision: str | None) -> None:
    """Fail before training when autocast cannot run ``mixed_precision`` on
    ``device`` (e.g. float16 autocast on a CPU build without it).

    Raises
    ------
    ValueError
        Naming the setting, the device and what to use instead.
    """
    dtype = autocast_dtype(mixed_precision)
    if dtype is None:
        return
    kind = device_type(device)
    try:
        supported = torch.amp.is_autocast_available(kind)
        if supported:
            with torch.autocast(device_type=kind, dtype=dtype):
                pass
    except (RuntimeError, AssertionError, ValueError):  # pragma: no cover
        supported = False
    if not supported:  # pragma: no cover - depends on the torch build
        raise ValueError(
            f"mixed_precision={mixed_precision!r} is not supported on device "
            f"{kind!r} by this torch build; use mixed_precision='bf16' or None."
        )


class ScaledStepMixin:
    """skorch's training step with the loss scaled by the net's
    ``grad_scaler_`` (a :class:`torch.amp.GradScaler` for ``"fp16"``, see
    :func:`grad_scaler`); with ``grad_scaler_`` None, skorch's own step.

    Put it before the skorch net class; the net creates ``grad_scaler_`` in
    ``initialize_module``.
    """

    _set_training: Any
    infer: Any
    get_loss: Any
    _zero_grad_optimizer: Any

    def train_step_single(self, batch: Any, **fit_params: Any) -> dict[str, Any]:
        """skorch's step; with a scaler the loss is scaled before the backward
        pass."""
        scaler = getattr(self, "grad_scaler_", None)
        if scaler is None:
            return super().train_step_single(batch, **fit_params)  # type: ignore[misc]
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        y_pred = self.infer(Xi, **fit_params)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        scaler.scale(loss).backward()
        return {"loss": loss, "y_pred": y_pred}

    def train_step(self, batch: Any, **fit_params: Any) -> dict[str, Any]:
        """skorch's step, or with a scaler :func:`scaled_step`: gradients
        unscaled before ``on_grad_computed`` (clipping callbacks see true
        values), a step whose gradients overflowed skipped (no closure: the
        scaler does not support one)."""
        scaler = getattr(self, "grad_scaler_", None)
        if scaler is None:
            return super().train_step(batch, **fit_params)  # type: ignore[misc]
        self._zero_grad_optimizer()
        step = self.train_step_single(batch, **fit_params)
        if step["loss"].grad_fn is None:  # a skipped batch: nothing to step
            return step
        scaled_step(self, scaler, batch)
        return step
