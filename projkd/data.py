"""Data sets ready for :class:`projkd.ProjectorDistiller`.

Small data sets come as numpy arrays of float32 images in [0, 1] (``N, C, H,
W``) with int64 labels: the estimator slices them into batches directly.
ImageNet-style folders are streamed as a torch ``Dataset``. Nothing is
downloaded unless ``download=True`` is passed (through to torchvision).
"""

from __future__ import annotations

import gzip
import lzma
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from sklearn import datasets

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MNIST_MEAN",
    "MNIST_STD",
    "DataSplits",
    "cifar_train_transform",
    "cifar_test_transform",
    "imagenet_train_transform",
    "imagenet_test_transform",
    "load_cifar10",
    "load_cifar100",
    "load_digits",
    "load_image_folder",
    "load_mnist",
    "normalize",
]

# Per-channel statistics of the training sets, on pixels scaled to [0, 1].
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DataSplits(NamedTuple):
    """A train/test split of images and labels.

    Attributes
    ----------
    X_train : ndarray of shape (n_train, C, H, W), float32 in [0, 1]
    y_train : ndarray of shape (n_train,), int64
    X_test : ndarray of shape (n_test, C, H, W), float32 in [0, 1]
    y_test : ndarray of shape (n_test,), int64
    classes : list of str
        Class names; label ``i`` is ``classes[i]``.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled handwritten digits as 8x8 greyscale images.

    The built-in default data of projkd: it ships with scikit-learn, so it
    needs no download.

    Returns
    -------
    X : ndarray of shape (1797, 1, 8, 8), float32
        Pixel intensities scaled to [0, 1].
    y : ndarray of shape (1797,), int64
        The digit, 0 to 9.

    Examples
    --------
    >>> X, y = load_digits()
    >>> X.shape, X.dtype, y[:5]
    ((1797, 1, 8, 8), dtype('float32'), array([0, 1, 2, 3, 4]))
    """
    digits = datasets.load_digits()
    X = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    return X, digits.target.astype(np.int64)


def normalize(X: np.ndarray, mean: Any, std: Any) -> np.ndarray:
    """Per-channel ``(X - mean) / std`` of ``(N, C, H, W)`` images, as float32.

    Returns a new array; ``X`` is left alone.
    """
    mean = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return (np.asarray(X, dtype=np.float32) - mean) / std


def _to_float_images(images: np.ndarray) -> np.ndarray:
    """uint8 ``(N, H, W, C)`` or ``(N, H, W)`` to float32 ``(N, C, H, W)`` in [0, 1]."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, :, :, None]
    out = np.empty((images.shape[0], images.shape[3], *images.shape[1:3]), np.float32)
    np.divide(images.transpose(0, 3, 1, 2), 255.0, out=out, casting="unsafe")
    return out


def _torchvision_splits(dataset_cls: Any, root: Path, download: bool) -> DataSplits:
    train = dataset_cls(str(root), train=True, download=download)
    test = dataset_cls(str(root), train=False, download=download)
    return DataSplits(
        _to_float_images(np.asarray(train.data)),
        np.asarray(train.targets, dtype=np.int64),
        _to_float_images(np.asarray(test.data)),
        np.asarray(test.targets, dtype=np.int64),
        list(train.classes),
    )


def load_cifar10(root: str | Path, *, download: bool = False) -> DataSplits:
    """CIFAR-10 through :class:`torchvision.datasets.CIFAR10`.

    Parameters
    ----------
    root : str or Path
        Folder holding ``cifar-10-batches-py`` (or where to download it).
    download : bool, default=False

    Returns
    -------
    splits : DataSplits
        50,000 train and 10,000 test images, (N, 3, 32, 32) in [0, 1].
    """
    from torchvision.datasets import CIFAR10

    return _torchvision_splits(CIFAR10, Path(root), download)


_SHARED_CIFAR100_PARTS = (
    "train_data.part0.npy.xz",
    "train_data.part1.npy.xz",
    "train_data.part2.npy.xz",
)


def load_cifar100(root: str | Path, *, download: bool = False) -> DataSplits:
    """CIFAR-100 from either of its two layouts.

    ``root`` may hold torchvision's layout (``cifar-100-python/``, read by
    :class:`torchvision.datasets.CIFAR100`, downloaded there with
    ``download=True``), or the lossless numpy copy of projkd's shared data
    (``train_data.part{0,1,2}.npy.xz``, ``test_data.npy.xz``, ``labels.npz``;
    see its ``SOURCE.md``). The layout is detected from the files present.

    Parameters
    ----------
    root : str or Path
    download : bool, default=False
        Passed to torchvision (the numpy layout is never downloaded).

    Returns
    -------
    splits : DataSplits
        50,000 train and 10,000 test images, (N, 3, 32, 32) float32 in [0, 1],
        fine labels 0..99 in the standard class order.
    """
    root = Path(root)
    if (root / "labels.npz").is_file() and (root / _SHARED_CIFAR100_PARTS[0]).is_file():
        return _load_shared_cifar100(root)
    from torchvision.datasets import CIFAR100

    return _torchvision_splits(CIFAR100, root, download)


def _load_xz_npy(path: Path) -> np.ndarray:
    with lzma.open(path) as f:
        return np.load(f)


def _load_shared_cifar100(root: Path) -> DataSplits:
    def images(rows: np.ndarray) -> np.ndarray:  # CIFAR rows: R plane, G plane, B plane
        out = np.empty((len(rows), 3, 32, 32), np.float32)
        np.divide(rows.reshape(-1, 3, 32, 32), 255.0, out=out, casting="unsafe")
        return out

    labels = np.load(root / "labels.npz")
    train = np.concatenate(
        [_load_xz_npy(root / part) for part in _SHARED_CIFAR100_PARTS]
    )
    return DataSplits(
        images(train),
        labels["train_fine_labels"].astype(np.int64),
        images(_load_xz_npy(root / "test_data.npy.xz")),
        labels["test_fine_labels"].astype(np.int64),
        [str(name) for name in labels["fine_label_names"]],
    )


_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def load_mnist(
    root: str | Path, *, download: bool = False, cache_dir: str | Path | None = None
) -> DataSplits:
    """MNIST through :class:`torchvision.datasets.MNIST`.

    ``root`` may hold torchvision's layout (``MNIST/raw/`` with the IDX
    files) or the four gzipped IDX files themselves, as LeCun distributes
    them; those are unpacked once into ``cache_dir/MNIST/raw`` for
    torchvision to read.

    Parameters
    ----------
    root : str or Path
    download : bool, default=False
        Passed to torchvision.
    cache_dir : str, Path or None, default=None
        Where gzipped files are unpacked; default ``~/.cache/projkd``.

    Returns
    -------
    splits : DataSplits
        60,000 train and 10,000 test images, (N, 1, 28, 28) float32 in [0, 1].
    """
    from torchvision.datasets import MNIST

    root = Path(root)
    if not download and all((root / f"{name}.gz").is_file() for name in _MNIST_FILES):
        cache = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "projkd"
        raw = cache / "MNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for name in _MNIST_FILES:
            if not (raw / name).is_file():
                with (
                    gzip.open(root / f"{name}.gz") as src,
                    open(raw / name, "wb") as dst,
                ):
                    shutil.copyfileobj(src, dst)
        root = cache
    splits = _torchvision_splits(MNIST, root, download)
    return splits._replace(classes=[str(i) for i in range(10)])


def load_image_folder(
    root: str | Path, *, train: bool = True, image_size: int = 224
) -> Any:
    """An ImageNet-style folder (``root/<class>/<image>``), streamed from disk.

    Parameters
    ----------
    root : str or Path
    train : bool, default=True
        Apply the reference training augmentation (random resized crop and
        flip) instead of the test transform (resize and centre crop).
    image_size : int, default=224

    Returns
    -------
    dataset : torchvision.datasets.ImageFolder
        Yields ``(image tensor (3, S, S), class index)``; pass it to ``fit``
        as ``X`` with ``y=None``. ``dataset.classes`` names the classes.
    """
    from torchvision.datasets import ImageFolder

    transform = (
        imagenet_train_transform(image_size)
        if train
        else imagenet_test_transform(image_size)
    )
    return ImageFolder(str(root), transform=transform)


def cifar_train_transform(mean: Any = CIFAR100_MEAN, std: Any = CIFAR100_STD) -> Any:
    """Per-sample torchvision transform of the CIFAR recipe: crop 32 (padding 4),
    flip, to tensor, normalize. For arrays, prefer the estimator's
    ``train_transform=RandomCropFlip()``, which augments whole batches."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


def cifar_test_transform(mean: Any = CIFAR100_MEAN, std: Any = CIFAR100_STD) -> Any:
    """To tensor and normalize: CIFAR evaluation never augments."""
    from torchvision import transforms

    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])


def imagenet_train_transform(image_size: int = 224) -> Any:
    """RandomResizedCrop + flip + normalize, the ImageNet training recipe."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def imagenet_test_transform(image_size: int = 224) -> Any:
    """Resize (to 8/7 of the crop: 256 for 224) + centre crop + normalize."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(round(image_size * 8 / 7)),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
