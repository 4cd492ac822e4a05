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
from ..errors import InputError

__all__ = [
    "DATASETS",
    "DEFAULT_ARCHS",
    "Data",
    "DataNotFoundError",
    "check_data_root",
    "load_data",
]

DATASETS = ("digits", "mnist", "cifar100", "imagefolder")
# (teacher, student) used when a command names no architecture
DEFAULT_ARCHS = {
    "digits": ("digits_teacher", "digits_student"),
    "mnist": ("mnist_teacher", "mnist_student"),
    "cifar100": ("resnet32x4", "resnet8x4"),
    "imagefolder": ("torchvision:resnet34", "torchvision:resnet18"),
}


# the layouts projkd reads, by data set, as the errors name them
_LAYOUTS = {
    "mnist": (
        "torchvision's (MNIST/raw/ with the four IDX files) or the four gzipped "
        "IDX files themselves (train-images-idx3-ubyte.gz, ...)"
    ),
    "cifar100": (
        "torchvision's (cifar-100-python/) or projkd's numpy copy "
        "(train_data.part{0,1,2}.npy.xz, test_data.npy.xz, labels.npz)"
    ),
    "imagefolder": "train/ and val/, each with one folder of images per class",
}
_DOWNLOADS = ("mnist", "cifar100")  # torchvision's download=True fetches these


class DataNotFoundError(InputError):
    """A data set that is not where ``--data-root`` says (a ``ValueError``);
    the message names the folder and the layouts projkd reads."""


def _has_layout(dataset: str, root: Path) -> bool:
    if dataset == "mnist":
        gz = all((root / f"{name}-ubyte.gz").is_file() for name in _MNIST_GZ)
        return gz or (root / "MNIST" / "raw").is_dir()
    if dataset == "cifar100":
        shared = (root / "labels.npz").is_file() and any(root.glob("*.npy.xz"))
        return shared or (root / "cifar-100-python").is_dir()
    return (root / "train").is_dir() and (root / "val").is_dir()


_MNIST_GZ = (
    "train-images-idx3",
    "train-labels-idx1",
    "t10k-images-idx3",
    "t10k-labels-idx1",
)


def check_data_root(dataset: str, root: str | None, *, download: bool = False) -> None:
    """Refuse a data set that is not where ``root`` says, before loading it.

    Parameters
    ----------
    dataset : {"digits", "mnist", "cifar100", "imagefolder"}
    root : str or None
        The ``--data-root`` folder (not needed for digits).
    download : bool, default=False
        torchvision downloads MNIST or CIFAR-100 into ``root``: only a root
        is needed then.

    Raises
    ------
    InputError
        If ``root`` is missing for a data set that needs one, or ``download``
        is asked of a data set torchvision does not download.
    DataNotFoundError
        If ``root`` is no folder, or holds none of the layouts projkd reads
        (the message names them, and ``--download``).

    Examples
    --------
    >>> check_data_root("digits", None)
    >>> try:
    ...     check_data_root("cifar100", "no/such/folder")
    ... except DataNotFoundError as error:
    ...     print(str(error).split(" (")[0])
    cifar100 is not in --data-root 'no/such/folder'
    """
    if dataset not in DATASETS:
        raise InputError(f"Unknown dataset {dataset!r}; use one of {DATASETS}.")
    if dataset == "digits":
        return
    if download and dataset not in _DOWNLOADS:
        raise InputError(
            f"--download works for {' and '.join(_DOWNLOADS)}, not {dataset}: "
            f"put the images in --data-root ({_LAYOUTS[dataset]})."
        )
    if root is None:
        raise InputError(
            f"--data-root is needed for {dataset}: the folder of its files, in "
            f"{_LAYOUTS[dataset]}."
        )
    if download or _has_layout(dataset, Path(root)):
        return
    what = "is no folder" if not Path(root).is_dir() else "holds none of its files"
    fetch = (
        "; or pass --download to fetch torchvision's there"
        if dataset in _DOWNLOADS
        else ""
    )
    raise DataNotFoundError(
        f"{dataset} is not in --data-root {root!r} (it {what}): projkd reads "
        f"{_LAYOUTS[dataset]}{fetch}."
    )


class Data(NamedTuple):
    """Train and test data of a named data set (arrays, or Datasets)."""

    X_train: Any
    y_train: Any
    X_test: Any
    y_test: Any
    n_classes: int
    in_channels: int


def load_data(
    dataset: str,
    root: str | None = None,
    *,
    subset: int | None = None,
    seed: int = 0,
    download: bool = False,
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
    download : bool, default=False
        Let torchvision download MNIST or CIFAR-100 into ``root``.

    Returns
    -------
    data : Data

    Raises
    ------
    DataNotFoundError
        If the data set is not in ``root`` (see :func:`check_data_root`), or
        torchvision finds its files there corrupted.

    Examples
    --------
    >>> data = load_data("digits", subset=100)
    >>> data.X_train.shape, data.n_classes
    ((100, 1, 8, 8), 10)
    """
    check_data_root(dataset, root, download=download)
    rng = np.random.default_rng(seed)
    if dataset == "digits":
        from sklearn.model_selection import train_test_split

        X, y = load_digits()
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=0.3, stratify=y, random_state=seed
        )
        data = Data(X_train, y_train, X_test, y_test, 10, 1)
    elif dataset in ("mnist", "cifar100"):
        assert root is not None  # check_data_root
        loader, mean, std = {
            "mnist": (load_mnist, MNIST_MEAN, MNIST_STD),
            "cifar100": (load_cifar100, CIFAR100_MEAN, CIFAR100_STD),
        }[dataset]
        try:
            splits = loader(root, download=download)
        except RuntimeError as error:  # torchvision: "Dataset not found or corrupted"
            raise DataNotFoundError(
                f"{dataset} cannot be read from --data-root {root!r} ({error}); "
                f"projkd reads {_LAYOUTS[dataset]}; pass --download to fetch "
                "torchvision's there."
            ) from None
        data = Data(
            normalize(splits.X_train, mean, std),
            splits.y_train,
            normalize(splits.X_test, mean, std),
            splits.y_test,
            len(splits.classes),
            splits.X_train.shape[1],
        )
    elif dataset == "imagefolder":
        assert root is not None  # check_data_root
        train = load_image_folder(Path(root) / "train", train=True)
        test = load_image_folder(Path(root) / "val", train=False)
        return Data(train, None, test, np.asarray(test.targets), len(train.classes), 3)
    if subset is not None and subset < len(data.X_train):
        keep = np.sort(rng.choice(len(data.X_train), subset, replace=False))
        data = data._replace(X_train=data.X_train[keep], y_train=data.y_train[keep])
    return data
