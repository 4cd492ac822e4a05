"""The data sets the ``projkd`` commands run on, loaded by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..data import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    MNIST_MEAN,
    MNIST_STD,
    load_cifar100,
    load_digits,
    load_image_folder,
    load_mnist,
    normalize,
)

__all__ = ["DATASETS", "DEFAULT_ARCHS", "Data", "load_data"]

DATASETS = ("digits", "mnist", "cifar100", "imagefolder")
# (teacher, student) used when a command names no architecture
DEFAULT_ARCHS = {
    "digits": ("digits_teacher", "digits_student"),
    "mnist": ("digits_teacher", "digits_student"),
    "cifar100": ("resnet32x4", "resnet8x4"),
    "imagefolder": ("torchvision:resnet34", "torchvision:resnet18"),
}


class Data(NamedTuple):
    """Train and test data of a named data set (arrays, or Datasets)."""

    X_train: Any
    y_train: Any
    X_test: Any
    y_test: Any
    n_classes: int
    in_channels: int


def load_data(
    dataset: str, root: str | None = None, *, subset: int | None = None, seed: int = 0
) -> Data:
    """Load a data set by name, normalized as its recipe expects.

    Parameters
    ----------
    dataset : {"digits", "mnist", "cifar100", "imagefolder"}
    root : str or None
        Where the files are (not needed for digits). For ``imagefolder``,
        a folder with ``train/`` and ``val/`` class folders.
    subset : int or None
        Keep this many training images (a stratified-enough random subset).
    seed : int, default=0
        Seeds the digits split and the subset.

    Returns
    -------
    data : Data

    Examples
    --------
    >>> data = load_data("digits", subset=100)
    >>> data.X_train.shape, data.n_classes
    ((100, 1, 8, 8), 10)
    """
    rng = np.random.default_rng(seed)
    if dataset == "digits":
        from sklearn.model_selection import train_test_split

        X, y = load_digits()
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=0.3, stratify=y, random_state=seed
        )
        data = Data(X_train, y_train, X_test, y_test, 10, 1)
    elif dataset in ("mnist", "cifar100"):
        if root is None:
            raise ValueError(f"--data-root is needed for {dataset}.")
        loader, mean, std = {
            "mnist": (load_mnist, MNIST_MEAN, MNIST_STD),
            "cifar100": (load_cifar100, CIFAR100_MEAN, CIFAR100_STD),
        }[dataset]
        splits = loader(root)
        data = Data(
            normalize(splits.X_train, mean, std),
            splits.y_train,
            normalize(splits.X_test, mean, std),
            splits.y_test,
            len(splits.classes),
            splits.X_train.shape[1],
        )
    elif dataset == "imagefolder":
        if root is None:
            raise ValueError("--data-root is needed for imagefolder.")
        train = load_image_folder(Path(root) / "train", train=True)
        test = load_image_folder(Path(root) / "val", train=False)
        return Data(train, None, test, np.asarray(test.targets), len(train.classes), 3)
    else:
        raise ValueError(f"Unknown dataset {dataset!r}; use one of {DATASETS}.")
    if subset is not None and subset < len(data.X_train):
        keep = np.sort(rng.choice(len(data.X_train), subset, replace=False))
        data = data._replace(X_train=data.X_train[keep], y_train=data.y_train[keep])
    return data
