"""How a command was launched: one process, or several under ``torchrun`` /
``accelerate launch``.

The commands (``distill``, ``train-teacher``, ``reproduce``) run unchanged
both ways. A :class:`Launch` says which: with several processes it holds the
``accelerate.Accelerator`` that every estimator of the command shares, splits
the recipe's batch (a *global* batch, as in the paper's single-GPU recipes)
into per-process batches, hands precision and compilation to the
accelerator, and lets only the main process write files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InputError
from ..parallel.process import broadcast_object
from .spec import launched_world_size

__all__ = ["Launch"]


@dataclass(frozen=True)
class Launch:
    """The processes a command runs in.

    Parameters
    ----------
    world_size : int
        Processes training together (1: a plain launch).
    accelerator : accelerate.Accelerator or None
        Shared by the command's estimators when ``world_size > 1``.

    Examples
    --------
    >>> launch = Launch.current()
    >>> launch.world_size, launch.is_main
    (1, True)
    >>> launch.per_process_batch(64)
    64
    """

    world_size: int = 1
    accelerator: Any = None

    @classmethod
    def current(
        cls,
        device: str = "cpu",
        fast: dict[str, Any] | None = None,
        world_size: int | None = None,
    ) -> Launch:
        """The launch of this process (``WORLD_SIZE``), with its accelerator.

        Parameters
        ----------
        device : str, default="cpu"
            The command's device: ``"cpu"`` trains CPU processes over gloo;
            anything else gives each process its GPU (``LOCAL_RANK``).
        fast : dict or None
            The run's speed settings (:func:`~projkd.experiments.speed_kwargs`):
            ``mixed_precision`` and ``compile`` go to the accelerator
            (``compile`` as its inductor backend).
        world_size : int or None
            ``None`` reads ``WORLD_SIZE``.
        """
        world_size = launched_world_size() if world_size is None else world_size
        if world_size <= 1:
            return cls()
        from accelerate import Accelerator

        on_cpu = torch.device(device).type == "cpu"
        if not on_cpu and not torch.cuda.is_available():
            raise InputError(
                f"device={device!r}, but this machine has no CUDA device; use "
                "--device cpu to train CPU processes over gloo."
            )
        fast = fast or {}
        accelerator = Accelerator(
            cpu=on_cpu,
            mixed_precision=fast.get("mixed_precision") or "no",
            dynamo_backend="inductor" if fast.get("compile") else "no",
        )
        return cls(world_size=world_size, accelerator=accelerator)

    @property
    def is_main(self) -> bool:
        """Whether this process writes the command's files."""
        return self.accelerator is None or bool(self.accelerator.is_main_process)

    @property
    def device(self) -> str | None:
        """This process's device (None for a plain launch: the command's)."""
        if self.accelerator is None:
            return None
        device = self.accelerator.device  # "cpu:0" names no map_location
        return "cpu" if device.type == "cpu" else str(device)

    def per_process_batch(self, batch_size: int) -> int:
        """This process's share of a global batch of ``batch_size`` samples.

        Raises
        ------
        ValueError
            If the processes cannot share the batch equally.
        """
        share, rest = divmod(batch_size, self.world_size)
        if rest or not share:
            raise InputError(
                f"The global batch of {batch_size} samples cannot be shared equally "
                f"by {self.world_size} processes. Launch a number of processes "
                "that divides it, or pass --batch-size with a multiple of "
                f"{self.world_size}."
            )
        return share

    def estimator_kwargs(self, fast: dict[str, Any]) -> dict[str, Any]:
        """Parameters of this launch's estimators, from the run's speed settings.

        A plain launch passes them all; with several processes the accelerator
        (and ``device=None``) replaces the device, precision and compilation.
        """
        if self.accelerator is None:
            return dict(fast)
        engine = ("mixed_precision", "compile")  # the accelerator's
        kept = {k: v for k, v in fast.items() if k not in engine}
        return {**kept, "accelerator": self.accelerator, "device": None}

    def agree(self, value: Any) -> Any:
        """The main process's ``value`` on every process (a decision they must
        share, such as whether time is up)."""
        return value if self.accelerator is None else broadcast_object(value)

    def wait(self) -> None:
        """Wait until every process reaches this point (after the main process
        wrote a file the others read)."""
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()
