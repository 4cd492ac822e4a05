"""One run specification for every command, and what it implies.

:class:`RunSpec` holds what ``train-teacher``, ``distill`` and ``search``
share (data, models, length, device, seed, output folder, speed settings,
logging); the CLI builds it from its arguments and the experiment functions
take it. The helpers here turn it into estimator parameters: the fast GPU
settings (:func:`speed_kwargs`), networks built under the run's seed
(:func:`build_model`) and the multi-process launch (:func:`launched_world_size`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..models import get_model
from ..parallel.process import launched_world_size
from ..utils import seeded
from .data import DEFAULT_ARCHS, Data
from .recipes import default_epochs, recipe

__all__ = [
    "EPOCH_TEST_IMAGES",
    "FAST_SETTINGS",
    "RunSpec",
    "build_model",
    "launched_world_size",
    "model_kwargs",
    "speed_kwargs",
]

#: Test images scored after each epoch but the last, which scores them all
#: (:class:`~projkd.experiments.tracking.EpochTestAccuracy`).
EPOCH_TEST_IMAGES = 2000
# what a CUDA run uses unless told --no-fast (issue: GPU-grade training)
FAST_SETTINGS: dict[str, Any] = dict(
    mixed_precision="bf16", compile=True, channels_last=True, data_device="auto"
)
MIXED_PRECISION = ("bf16", "fp16")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """What a run trains, on which data, where, and how fast.

    Parameters
    ----------
    dataset : {"digits", "mnist", "cifar100", "imagefolder"}, default="digits"
    data_root : str or None, default=None
        Folder of the data set's files (not needed for digits).
    download : bool, default=False
        Let torchvision download MNIST or CIFAR-100 into ``data_root``.
    subset : int or None, default=None
        Train on this many images only.
    epochs : int or None, default=None
        ``None``: the data set's recipe (CIFAR-100: 240); the lr milestones
        are scaled to it.
    batch_size : int or None, default=None
        ``None``: the recipe's (CIFAR-100: 64). The global batch: under a
        multi-process launch each process trains on ``batch_size / processes``
        samples of it.
    device : str, default="cpu"
    seed : int, default=0
        Seeds the data split, every network's initialisation and training.
    out : str or Path, default="projkd-runs"
        Output folder.
    teacher_arch, student_arch : str or None, default=None
        :func:`projkd.models.get_model` names; ``None``: the data set's default.
    teacher_weights : str or None, default=None
        ``teacher.pt`` written by ``train-teacher`` (needed to distil).
    mixed_precision : {"bf16", "fp16"} or None, default=None
    compile : bool or None, default=None
    channels_last : bool or None, default=None
        ``None`` leaves the choice to ``fast``.
    fast : bool, default=True
        On CUDA, use :data:`FAST_SETTINGS` for whatever is not set.
    tensorboard : str or None, default=None
        Write TensorBoard event files to this folder.
    epoch_metrics : bool, default=False
        Record the training batches' ECE and CKA with the teacher each epoch.
    epoch_test_images : int or None, default=2000
        Score each epoch but the last on a fixed subset of this many test
        images, the last on all of them (None: all of them every epoch;
        :data:`~projkd.experiments.tracking.EPOCH_TEST_IMAGES`).
    progress : bool, default=True
        Show a progress bar.

    Examples
    --------
    >>> spec = RunSpec(dataset="cifar100").resolve()
    >>> spec.epochs, spec.teacher_arch, spec.student_arch
    (240, 'resnet32x4', 'resnet8x4')
    """

    dataset: str = "digits"
    data_root: str | None = None
    download: bool = False
    subset: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    device: str = "cpu"
    seed: int = 0
    out: str | Path = "projkd-runs"
    teacher_arch: str | None = None
    teacher_weights: str | None = None
    student_arch: str | None = None
    mixed_precision: str | None = None
    compile: bool | None = None
    channels_last: bool | None = None
    fast: bool = True
    tensorboard: str | None = None
    epoch_metrics: bool = False
    epoch_test_images: int | None = EPOCH_TEST_IMAGES
    progress: bool = True

    def __post_init__(self) -> None:
        if self.mixed_precision not in (None, *MIXED_PRECISION):
            raise InputError(
                f"mixed_precision={self.mixed_precision!r}; use one of "
                f"{MIXED_PRECISION} or None."
            )
        if self.epochs is not None and self.epochs < 0:
            raise InputError(f"epochs must be >= 0, got {self.epochs}.")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.epoch_test_images is not None and self.epoch_test_images < 1:
            raise InputError(
                f"epoch_test_images must be >= 1 or None, got {self.epoch_test_images}."
            )

    def resolve(self) -> RunSpec:
        """This specification with the data set's defaults filled in."""
        teacher, student = DEFAULT_ARCHS.get(self.dataset, (None, None))
        return dataclasses.replace(
            self,
            epochs=default_epochs(self.dataset) if self.epochs is None else self.epochs,
            teacher_arch=self.teacher_arch or teacher,
            student_arch=self.student_arch or student,
        )

    def training_params(self, arch: str) -> dict[str, Any]:
        """The recipe's skorch parameters for training ``arch``, with this
        run's deviations (``batch_size``) applied."""
        assert self.epochs is not None, "resolve() the specification first"
        params = recipe(self.dataset, arch, self.epochs)
        if self.batch_size is not None:
            params["batch_size"] = self.batch_size
        return params

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON values (for ``config.json``)."""
        record = dataclasses.asdict(self)
        record["out"] = str(self.out)
        return record


def speed_kwargs(spec: RunSpec, *, data_device: bool = True) -> dict[str, Any]:
    """Estimator parameters of the run's speed settings.

    Only what is set is returned, so that a CPU run without flags passes
    none (estimators that lack a parameter keep working). On CUDA, unless
    ``spec.fast`` is false, the unset ones come from :data:`FAST_SETTINGS`.

    Parameters
    ----------
    spec : RunSpec
    data_device : bool, default=True
        Include ``data_device`` (estimators that hold their data on the
        device; not the teacher trainer).

    Returns
    -------
    kwargs : dict

    Examples
    --------
    >>> speed_kwargs(RunSpec(device="cpu"))
    {}
    >>> speed_kwargs(RunSpec(device="cuda", channels_last=False))["channels_last"]
    False
    """
    chosen = {
        "mixed_precision": spec.mixed_precision,
        "compile": spec.compile,
        "channels_last": spec.channels_last,
    }
    kwargs = {name: value for name, value in chosen.items() if value is not None}
    if spec.fast and torch.device(spec.device).type == "cuda":
        kwargs = {**FAST_SETTINGS, **kwargs}
    if not data_device:
        kwargs.pop("data_device", None)
    return kwargs


def model_kwargs(arch: str, data: Data) -> dict[str, Any]:
    """The arguments of :func:`~projkd.models.get_model` that fit ``arch`` to
    ``data``: its classes, its channels (digits and MNIST networks) and no
    downloaded weights (torchvision networks)."""
    kwargs: dict[str, Any] = {"num_classes": data.n_classes}
    if arch.startswith(("digits_", "mnist_")):
        kwargs["in_channels"] = data.in_channels
    if arch.startswith("torchvision:"):
        kwargs["weights"] = None
    return kwargs


def build_model(arch: str, data: Data, *, seed: int, device: str = "cpu") -> Any:
    """Build a network by name, initialised under the run's seed.

    Networks built from torch's global generator differ from process to
    process; built here, the same seed gives the same weights everywhere.
    """
    with seeded(seed, device):
        return get_model(arch, **model_kwargs(arch, data))
