"""The training recipes of the reference experiments (METHOD.md)."""

from __future__ import annotations

from typing import Any

import torch
from skorch.callbacks import LRScheduler

from ..augment import RandomCropFlip
from ..data import CIFAR100_MEAN, CIFAR100_STD

__all__ = ["LinearWarmup", "default_epochs", "recipe", "scaled_milestones"]

# name -> (epochs of the full recipe, lr x 0.1 at these epochs)
_SCHEDULES = {"cifar100": (240, (150, 180, 210)), "imagefolder": (100, (30, 60, 90))}
_DIGITS_EPOCHS = 20
_SMALL_LR_STUDENTS = ("mobilenetv2", "shufflenetv1", "shufflenetv2")


def default_epochs(dataset: str) -> int:
    """Epochs of ``dataset``'s reference recipe (CIFAR-100: 240, ImageNet
    folders: 100; digits and MNIST, which have no reference recipe: 20).

    Examples
    --------
    >>> default_epochs("cifar100")
    240
    """
    return _SCHEDULES[dataset][0] if dataset in _SCHEDULES else _DIGITS_EPOCHS


def scaled_milestones(dataset: str, epochs: int) -> list[int]:
    """The recipe's lr milestones scaled from its full length to ``epochs``.

    Examples
    --------
    >>> scaled_milestones("cifar100", 240)
    [150, 180, 210]
    >>> scaled_milestones("cifar100", 60)
    [38, 45, 52]
    """
    full, milestones = _SCHEDULES[dataset]
    return sorted({max(1, round(m * epochs / full)) for m in milestones})


class LinearWarmup:
    """The lr factor of epoch ``e`` (0-based): a linear warm-up over the first
    ``warmup`` epochs, ``(e + 1) / (warmup + 1)``, times ``gamma`` for each
    milestone reached (:class:`torch.optim.lr_scheduler.LambdaLR`'s
    ``lr_lambda``; a class, so that a checkpointed net pickles).

    Parameters
    ----------
    warmup : int
        Epochs of warm-up (0: none).
    milestones : sequence of int, default=()
        Epochs at which the lr is multiplied by ``gamma`` (as ``MultiStepLR``).
    gamma : float, default=0.1

    Examples
    --------
    >>> factor = LinearWarmup(2, milestones=[4], gamma=0.1)
    >>> [round(factor(e), 4) for e in range(6)]
    [0.3333, 0.6667, 1.0, 1.0, 0.1, 0.1]
    """

    def __init__(self, warmup: int, milestones: Any = (), gamma: float = 0.1):
        self.warmup = warmup
        self.milestones = list(milestones)
        self.gamma = gamma

    def __call__(self, epoch: int) -> float:
        warm = min(1.0, (epoch + 1) / (self.warmup + 1))
        return warm * self.gamma ** sum(epoch >= m for m in self.milestones)

    def __repr__(self) -> str:
        return (
            f"LinearWarmup({self.warmup}, milestones={self.milestones}, "
            f"gamma={self.gamma})"
        )


def recipe(
    dataset: str, student_arch: str, epochs: int, *, warmup_epochs: int = 0
) -> dict[str, Any]:
    """Training parameters of the reference recipe for ``dataset``.

    Parameters
    ----------
    dataset : {"digits", "mnist", "cifar100", "imagefolder"}
    student_arch : str
        The network trained (MobileNetV2 and ShuffleNet take a smaller lr).
    epochs : int
        Length of the run; the lr milestones are scaled to it.
    warmup_epochs : int, default=0
        A linear lr warm-up over the first epochs (:class:`LinearWarmup`),
        e.g. for a batch larger than the recipe's (a deviation).

    Returns
    -------
    params : dict
        skorch parameters (``optimizer``, ``lr``, ``optimizer__*``,
        ``batch_size``, ``callbacks`` with the lr schedule) and, for CIFAR-100,
        ``train_transform``.

    Notes
    -----
    CIFAR-100: SGD momentum 0.9, weight decay 5e-4, lr 0.05 (0.01 for
    MobileNetV2 and ShuffleNet students), batch 64, lr x 0.1 at epochs
    150, 180, 210 of 240, with crop + flip padded with black
    (:meth:`RandomCropFlip.for_normalization`). ImageNet folders: batch 256,
    lr 0.1, weight decay 1e-4, x 0.1 at 30/60/90 of 100 (augmented by the
    folder's own transforms). Digits and MNIST: Adam, lr 3e-3, batch 64.

    Examples
    --------
    >>> params = recipe("cifar100", "resnet8x4", 240)
    >>> params["lr"], params["batch_size"], params["optimizer__weight_decay"]
    (0.05, 64, 0.0005)
    """
    if dataset not in _SCHEDULES:
        adam: dict[str, Any] = dict(optimizer=torch.optim.Adam, lr=3e-3, batch_size=64)
        if warmup_epochs:
            scheduler = LRScheduler(
                torch.optim.lr_scheduler.LambdaLR,
                lr_lambda=LinearWarmup(warmup_epochs),
            )
            adam["callbacks"] = [("lr_scheduler", scheduler)]
        return adam
    if dataset == "cifar100":
        lr = 0.01 if student_arch.split(":")[-1] in _SMALL_LR_STUDENTS else 0.05
        weight_decay, batch = 5e-4, 64
    else:
        lr, weight_decay, batch = 0.1, 1e-4, 256
    milestones = scaled_milestones(dataset, epochs)
    if warmup_epochs:
        scheduler = LRScheduler(
            torch.optim.lr_scheduler.LambdaLR,
            lr_lambda=LinearWarmup(warmup_epochs, milestones, gamma=0.1),
        )
    else:
        scheduler = LRScheduler(
            torch.optim.lr_scheduler.MultiStepLR, milestones=milestones, gamma=0.1
        )
    params: dict[str, Any] = dict(
        optimizer=torch.optim.SGD,
        lr=lr,
        optimizer__momentum=0.9,
        optimizer__weight_decay=weight_decay,
        batch_size=batch,
        callbacks=[("lr_scheduler", scheduler)],
    )
    if dataset == "cifar100":
        params["train_transform"] = RandomCropFlip.for_normalization(
            CIFAR100_MEAN, CIFAR100_STD
        )
    return params
