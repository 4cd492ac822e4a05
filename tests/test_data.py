import gzip
import lzma
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from projkd import ProjectorDistiller
from projkd.data import (
    CIFAR100_MEAN,
    load_cifar10,
    load_cifar100,
    load_image_folder,
    load_mnist,
    normalize,
)
from projkd.models import DigitsCNN

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def no_checksums(monkeypatch):
    """torchvision verifies CIFAR files by MD5; tiny test files cannot match."""
    monkeypatch.setattr(
        "torchvision.datasets.cifar.check_integrity", lambda *a, **k: True
    )


def write_cifar_pickles(folder, files, n, n_classes, label_key, rng):
    folder.mkdir(parents=True)
    data = {}
    for name in files:
        rows = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, n_classes, n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rows, label_key: labels}, f)
        data[name] = (rows, labels)
    return data


def test_cifar100_in_torchvision_layout(tmp_path, no_checksums):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-100-python"
    data = write_cifar_pickles(folder, ["train", "test"], 6, 100, "fine_labels", rng)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)]}, f)
    splits = load_cifar100(tmp_path)
    rows, labels = data["train"]
    assert splits.X_train.shape == (6, 3, 32, 32) and splits.X_train.dtype == np.float32
    np.testing.assert_allclose(
        splits.X_train, rows.reshape(6, 3, 32, 32) / 255.0, rtol=1e-6
    )
    np.testing.assert_array_equal(splits.y_train, labels)
    assert splits.X_test.shape == (6, 3, 32, 32) and splits.classes[3] == "c3"


def test_cifar10_in_torchvision_layout(tmp_path, no_checksums):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    data = write_cifar_pickles(folder, names, 2, 10, "labels", rng)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"k{i}" for i in range(10)]}, f)
    splits = load_cifar10(tmp_path)
    assert splits.X_train.shape == (10, 3, 32, 32) and splits.X_test.shape == (
        2,
        3,
        32,
        32,
    )
    np.testing.assert_array_equal(splits.y_test, data["test_batch"][1])


def write_xz(path, array):
    with lzma.open(path, "wb") as f:
        np.save(f, array)


def test_cifar100_in_the_shared_numpy_layout(tmp_path):
    rng = np.random.default_rng(2)
    parts = [rng.integers(0, 256, (k, 3072), dtype=np.uint8) for k in (3, 2, 2)]
    for i, part in enumerate(parts):
        write_xz(tmp_path / f"train_data.part{i}.npy.xz", part)
    write_xz(
        tmp_path / "test_data.npy.xz", rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    )
    np.savez(
        tmp_path / "labels.npz",
        train_fine_labels=np.arange(7, dtype=np.uint8),
        test_fine_labels=np.arange(4, dtype=np.uint8),
        fine_label_names=np.array([f"n{i}" for i in range(100)]),
    )
    splits = load_cifar100(tmp_path)
    assert splits.X_train.shape == (7, 3, 32, 32) and splits.X_test.shape == (
        4,
        3,
        32,
        32,
    )
    # rows are CIFAR's planar layout: 1024 red, 1024 green, 1024 blue values
    assert splits.X_train[3, 1, 0, 0] == pytest.approx(parts[1][0, 1024] / 255.0)
    np.testing.assert_array_equal(splits.y_train, np.arange(7))
    assert splits.classes[:2] == ["n0", "n1"]


def write_idx(path, array, *, gz=False):
    magic = 2051 if array.ndim == 3 else 2049
    header = magic.to_bytes(4, "big") + b"".join(
        d.to_bytes(4, "big") for d in array.shape
    )
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("layout", ["torchvision", "gzipped"])
def test_mnist_layouts(tmp_path, layout):
    rng = np.random.default_rng(3)
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(5),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 28, 28)),
        "t10k-labels-idx1-ubyte": np.array([7, 8, 9]),
    }
    root = tmp_path / "data"
    raw = root / "MNIST" / "raw" if layout == "torchvision" else root
    raw.mkdir(parents=True)
    for name, array in files.items():
        gz = layout == "gzipped"
        write_idx(raw / (name + ".gz" if gz else name), array, gz=gz)
    splits = load_mnist(root, cache_dir=tmp_path / "cache")
    assert splits.X_train.shape == (5, 1, 28, 28)
    np.testing.assert_allclose(
        splits.X_train[:, 0], files["train-images-idx3-ubyte"] / 255.0, rtol=1e-6
    )
    np.testing.assert_array_equal(splits.y_test, [7, 8, 9])


def test_image_folder_streams_into_fit(tmp_path):
    rng = np.random.default_rng(4)
    for label in ("ant", "bee"):
        (tmp_path / label).mkdir()
        for i in range(4):
            pixels = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / label / f"{i}.png")
    train = load_image_folder(tmp_path, train=True, image_size=8)
    test = load_image_folder(tmp_path, train=False, image_size=8)
    assert train.classes == ["ant", "bee"] and len(train) == 8
    image, target = test[0]
    assert image.shape == (3, 8, 8) and target == 0
    teacher = DigitsCNN(width=4, n_features=8, num_classes=2, in_channels=3).eval()
    est = ProjectorDistiller(
        teacher,
        DigitsCNN,
        student__width=2,
        student__num_classes=2,
        student__in_channels=3,
        max_epochs=1,
        batch_size=4,
        train_split=None,
        verbose=0,
    ).fit(train, None)
    assert est.predict(test).shape == (8,)


def test_normalize_uses_channel_statistics():
    X = (
        np.ones((2, 3, 4, 4), np.float32)
        * np.array(CIFAR100_MEAN, np.float32)[:, None, None]
    )
    np.testing.assert_allclose(normalize(X, CIFAR100_MEAN, (1, 1, 1)), 0.0, atol=1e-6)


@pytest.mark.skipif(not (SHARED / "cifar100").is_dir(), reason="shared data absent")
def test_real_cifar100_from_shared_data():
    splits = load_cifar100(SHARED / "cifar100")
    assert splits.X_train.shape == (50_000, 3, 32, 32)
    assert splits.X_test.shape == (10_000, 3, 32, 32)
    assert len(splits.classes) == 100 and set(np.unique(splits.y_train)) == set(
        range(100)
    )
    mean = splits.X_train.mean(axis=(0, 2, 3), dtype=np.float64)
    np.testing.assert_allclose(mean, (0.5071, 0.4865, 0.4409), atol=2e-4)
    assert splits.y_train[:10].tolist() == [19, 29, 0, 11, 1, 86, 90, 28, 23, 31]


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="shared data absent")
def test_real_mnist_from_shared_data(tmp_path):
    splits = load_mnist(SHARED / "mnist", cache_dir=tmp_path)
    assert splits.X_train.shape == (60_000, 1, 28, 28)
    assert splits.X_test.shape == (10_000, 1, 28, 28)
    assert float(splits.X_train.mean()) == pytest.approx(0.1307, abs=1e-4)
    assert torch.bincount(torch.as_tensor(splits.y_test)).tolist()[:3] == [
        980,
        1135,
        1032,
    ]
