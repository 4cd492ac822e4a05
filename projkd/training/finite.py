"""Non-finite training losses handled on the device, without a host read
per step.

``nonfinite_loss`` ("raise" or "skip") must keep a NaN or infinite loss from
reaching the weights. Reading ``isfinite(loss)`` back before every optimizer
step makes the host wait for the accelerator each batch. Here, as
:class:`torch.amp.GradScaler` does for its overflow skips, the decision stays
on the device: each step writes a flag tensor (1.0: do not update) that a
fused optimizer takes as its ``found_inf`` and honours inside its kernel --
no parameter, momentum buffer, step count or weight decay moves. (Zeroing
the gradients with ``torch.where`` would not be a skip: momentum and weight
decay would still move the weights.) The flags travel with the epoch's
other device records (:class:`~projkd.training.records.EpochRecords`) in
its one transfer at the end of the epoch, when ``"raise"`` raises naming the
first bad batch and its terms (the flag stays set after it, so the weights
are those after the last finite step), and ``"skip"`` warns for each bad
batch and counts it in ``train_skipped``.

The read per step remains where the optimizer cannot take the flag: an
optimizer that is not fused (:class:`FusedOptimizerMixin` makes torch's
optimizers fused by default), the first step of an SGD with momentum (a
fused SGD skipping its first step leaves its momentum buffers
uninitialised), an fp16 fit (the
:class:`~torch.amp.GradScaler` owns ``found_inf`` there; its own overflow
skips stay separate from ``nonfinite_loss``), and steps outside skorch's
epoch loop.

BatchNorm running statistics are buffers, not weights: the forward pass of a
bad batch (and, with ``"raise"``, of the rest of its epoch) updates them as
before the check, today as before this change for the bad batch itself.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "FiniteStepMixin",
    "FusedOptimizerMixin",
    "NonFiniteLossError",
    "takes_found_inf",
]

# parameter dtypes torch's fused optimizer kernels take on CPU and CUDA
_FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; no weight was updated with it."""


def takes_found_inf(optimizer: Any) -> bool:
    """Whether ``optimizer`` (or the one an Accelerate wrapper holds) skips
    its update on the device when given a ``found_inf`` flag: a fused torch
    optimizer whose steps no loss scaler owns and, with momentum, that has
    stepped before (torch's fused SGD skipping its first step leaves its
    momentum buffers uninitialised).

    Examples
    --------
    >>> import torch
    >>> w = torch.nn.Parameter(torch.ones(2))
    >>> takes_found_inf(torch.optim.SGD([w], lr=0.1, momentum=0.9))
    False
    """
    if getattr(optimizer, "scaler", None) is not None:  # Accelerate's fp16
        return False
    inner = getattr(optimizer, "optimizer", optimizer)
    if not isinstance(inner, torch.optim.Optimizer):
        return False
    groups = inner.param_groups
    if any(group.get("momentum") for group in groups) and not inner.state:
        return False  # a skipped first step would leave momentum buffers unset
    return all(group.get("fused") for group in groups)


def fused_kwargs(optimizer: Any, params: Any, kwargs: dict[str, Any]) -> None:
    """Add ``fused=True`` to an optimizer's ``kwargs`` when its class takes
    ``fused``, neither ``fused`` nor ``foreach`` is set, and every parameter
    is a floating tensor on the CPU or a CUDA device."""
    if {"fused", "foreach"} & set(kwargs) or not isinstance(optimizer, type):
        return
    try:
        accepts = "fused" in inspect.signature(optimizer).parameters
    except (TypeError, ValueError):  # pragma: no cover - a builtin signature
        return
    tensors = [
        p
        for group in params
        for p in (group["params"] if isinstance(group, dict) else [group])
    ]
    if accepts and tensors and all(_fusable(p) for p in tensors):
        kwargs["fused"] = True


def _fusable(tensor: Any) -> bool:
    return (
        isinstance(tensor, Tensor)
        and tensor.device.type in ("cpu", "cuda")
        and tensor.dtype in _FUSED_DTYPES
    )


class FusedOptimizerMixin:
    """torch's optimizers built fused (one kernel per step for all
    parameters) unless ``optimizer__fused`` or ``optimizer__foreach`` is set
    (a skorch mixin, before the net class)."""

    def get_params_for_optimizer(
        self, prefix: str, named_parameters: Any
    ) -> tuple[Any, dict[str, Any]]:
        """skorch's optimizer arguments, with ``fused=True`` where it applies."""
        args, kwargs = super().get_params_for_optimizer(  # type: ignore[misc]
            prefix, named_parameters
        )
        if args:
            fused_kwargs(getattr(self, prefix, None), args[0], kwargs)
        return args, kwargs


class FiniteStepMixin(FusedOptimizerMixin):
    """``nonfinite_loss`` for a skorch net with
    :class:`~projkd.training.records.DeviceRecordsMixin` (before it in the
    bases): the net's ``get_loss`` passes each training loss through
    :meth:`guard_nonfinite`.
    """

    nonfinite_loss: str
    epoch_records_: Any
    history: Any
    _optimizers: list[str]

    def _gated_optimizers(self) -> list[Any]:
        """The optimizers a device flag can gate this step ([] if any cannot)."""
        if getattr(self, "grad_scaler_", None) is not None:
            return []  # fp16: the GradScaler owns found_inf
        if not self.epoch_records_.is_open:
            return []
        optimizers = [getattr(self, name + "_") for name in self._optimizers]
        if not optimizers or not all(takes_found_inf(o) for o in optimizers):
            return []
        return [getattr(o, "optimizer", o) for o in optimizers]

    def train_step(self, batch: Any, **fit_params: Any) -> dict[str, Any]:
        """The net's step, with the epoch's non-finite flag as each fused
        optimizer's ``found_inf`` (see :mod:`projkd.training.finite`)."""
        optimizers = self._gated_optimizers()
        if not optimizers:
            return super().train_step(batch, **fit_params)  # type: ignore[misc]
        device = optimizers[0].param_groups[0]["params"][0].device
        flag = self.epoch_records_.step_flag(device)
        for optimizer in optimizers:
            optimizer.found_inf = flag  # what GradScaler hands a fused step
        self.__dict__["gated_step_"] = True  # per step: no skorch bookkeeping
        try:
            return super().train_step(batch, **fit_params)  # type: ignore[misc]
        finally:
            self.__dict__["gated_step_"] = False
            for optimizer in optimizers:
                del optimizer.found_inf

    def agree_nonfinite(self, bad: Tensor) -> Tensor:
        """The step's flag (a 0-d bool tensor) as every process sees it: here
        one process; data-parallel nets all-reduce it, so that their
        processes skip or stop at the same step."""
        return bad

    def guard_nonfinite(
        self, loss: Tensor, values: Tensor, names: tuple[str, ...]
    ) -> Tensor:
        """The training ``loss`` to back-propagate.

        In a gated step (a fused optimizer), the flag is set on the device
        and ``loss`` returned unread; otherwise ``isfinite(loss)`` is read,
        and a non-finite loss handled at once (:meth:`nonfinite_batches`):
        "raise" raises, "skip" returns a zero leaf whose backward leaves
        every gradient empty. ``values`` are the batch's records, ``names``
        theirs.
        """
        bad = self.agree_nonfinite(~torch.isfinite(loss))
        if getattr(self, "gated_step_", False):
            self.epoch_records_.flag(bad, sticky=self.nonfinite_loss == "raise")
            return loss
        if not bool(bad):
            return loss
        records = self.epoch_records_
        batch = len(records.rows) - 1 if records.is_open else 0
        self.nonfinite_batches({batch: dict(zip(names, values.tolist(), strict=True))})
        if records.is_open:
            records.skip()  # left out of the epoch's means
        return torch.zeros((), device=loss.device, requires_grad=True)

    def nonfinite_batches(self, batches: dict[int, dict[str, float]]) -> None:
        """Raise (the first batch) or warn (each one) for these batches of the
        current epoch, given by their index and recorded values."""
        epoch = len(self.history)
        for index, named in sorted(batches.items()):
            total = named.get("loss", float("nan"))
            culprits = {
                k: v for k, v in named.items() if k != "loss" and not math.isfinite(v)
            }
            what = (
                ", ".join(f"{name} = {value}" for name, value in culprits.items())
                or "each term is finite but their weighted sum is not"
            )
            where = f"at epoch {epoch}, batch {index + 1} ({what})"
            if self.nonfinite_loss != "skip":
                raise NonFiniteLossError(
                    f"The training loss became {total} {where}. The weights are "
                    "those after the last finite step, and the estimator stays "
                    "usable. Lower lr, check the inputs, or pass "
                    "nonfinite_loss='skip' to skip such batches."
                )
            warnings.warn(
                f"Skipped a training batch whose loss is {total} {where}.",
                RuntimeWarning,
                stacklevel=3,
            )
