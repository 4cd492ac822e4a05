"""The paper's experiments as functions: what the ``projkd`` commands run.

Every run's real work goes through :class:`~projkd.ProjectorDistiller` (or
skorch for teachers). A run writes a folder: ``config.json`` (what to rebuild
it from), weights as ``state_dict`` files (loaded with ``weights_only=True``),
``history.json``, and its results as ``results.json`` and ``results.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from skorch.callbacks import LRScheduler, ProgressBar

from .augment import RandomCropFlip
from .data import (
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
from .distiller import ProjectorDistiller
from .models import get_model
from .teacher import load_teacher, save_teacher, train_teacher
from .teacher_cache import compute_teacher_outputs

__all__ = [
    "DATASETS",
    "Data",
    "distill",
    "load_data",
    "load_run",
    "recipe",
    "search",
    "train_teacher_run",
    "write_results",
]

DATASETS = ("digits", "mnist", "cifar100", "imagefolder")
DEFAULT_ARCHS = {
    "digits": ("digits_teacher", "digits_student"),
    "mnist": ("digits_teacher", "digits_student"),
    "cifar100": ("resnet32x4", "resnet8x4"),
    "imagefolder": ("torchvision:resnet34", "torchvision:resnet18"),
}
# the reference CIFAR-100 recipe: 240 epochs, lr x 0.1 at these epochs
_MILESTONES = (150, 180, 210)
_FULL_EPOCHS = 240
_SMALL_LR_STUDENTS = ("mobilenetv2", "shufflenetv1", "shufflenetv2")


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


def recipe(dataset: str, student_arch: str, epochs: int) -> dict[str, Any]:
    """Training parameters of the reference recipe for ``dataset``.

    CIFAR-100: SGD momentum 0.9, weight decay 5e-4, lr 0.05 (0.01 for
    MobileNetV2 and ShuffleNet students), batch 64, lr x 0.1 at epochs
    150, 180, 210 of 240 -- scaled to ``epochs`` -- with crop + flip. ImageNet
    folders: batch 256, lr 0.1, weight decay 1e-4, x 0.1 at 30/60/90 of 100.
    Digits and MNIST: Adam, lr 3e-3, batch 64.
    """
    if dataset in ("digits", "mnist"):
        return dict(optimizer=torch.optim.Adam, lr=3e-3, batch_size=64)
    if dataset == "cifar100":
        lr = 0.01 if student_arch.split(":")[-1] in _SMALL_LR_STUDENTS else 0.05
        milestones, weight_decay, batch = _MILESTONES, 5e-4, 64
        full = _FULL_EPOCHS
        transform = RandomCropFlip.for_normalization(CIFAR100_MEAN, CIFAR100_STD)
    else:
        lr, milestones, weight_decay, batch = 0.1, (30, 60, 90), 1e-4, 256
        full, transform = 100, None
    scaled = sorted({max(1, round(m * epochs / full)) for m in milestones})
    params: dict[str, Any] = dict(
        optimizer=torch.optim.SGD,
        lr=lr,
        optimizer__momentum=0.9,
        optimizer__weight_decay=weight_decay,
        batch_size=batch,
        callbacks=[
            (
                "lr_scheduler",
                LRScheduler(
                    torch.optim.lr_scheduler.MultiStepLR, milestones=scaled, gamma=0.1
                ),
            )
        ],
    )
    if transform is not None:
        params["train_transform"] = transform
    return params


def _progress(callbacks: list[Any]) -> list[Any]:
    return [*callbacks, ("progress", ProgressBar())]


def _save_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_results(out: Path, records: list[dict[str, Any]], markdown: str) -> None:
    """Save a run's results as JSON and as a markdown table."""
    _save_json(out / "results.json", records)
    (out / "results.md").write_text(markdown + "\n")


def train_teacher_run(
    *,
    dataset: str,
    data_root: str | None,
    arch: str | None,
    epochs: int,
    out: str | Path,
    device: str = "cpu",
    subset: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Train a teacher with the dataset's recipe and save its weights.

    Returns the results record (train and test accuracy).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(dataset, data_root, subset=subset, seed=seed)
    arch = arch or DEFAULT_ARCHS[dataset][0]
    model = _build(arch, data)
    params = recipe(dataset, arch, epochs)
    params.pop("train_transform", None)  # skorch's net has no batch transform hook
    params["callbacks"] = _progress(params.get("callbacks", []))
    teacher = train_teacher(
        model,
        data.X_train,
        data.y_train,
        max_epochs=epochs,
        device=device,
        random_state=seed,
        **params,
    )
    save_teacher(teacher, out / "teacher.pt")
    record: dict[str, Any] = {
        "model": f"teacher ({arch})",
        "train_acc": _accuracy(teacher, data.X_train, data.y_train, device),
        "test_acc": _accuracy(teacher, data.X_test, data.y_test, device),
    }
    _save_json(
        out / "config.json",
        {"kind": "teacher", "dataset": dataset, "data_root": data_root, "arch": arch},
    )
    write_results(
        out,
        [record],
        f"| model | train acc | test acc |\n|---|---:|---:|\n"
        f"| {record['model']} | {100 * record['train_acc']:.2f} | "
        f"{100 * record['test_acc']:.2f} |",
    )
    return record


def _accuracy(model: torch.nn.Module, X: Any, y: Any, device: str) -> float:
    logits = compute_teacher_outputs(model, X, device=device).logits
    return float((logits.argmax(1).numpy() == np.asarray(y)).mean())


def _build(arch: str, data: Data) -> torch.nn.Module:
    kwargs: dict[str, Any] = {}
    if arch.startswith("digits_"):
        kwargs["in_channels"] = data.in_channels
    if arch.startswith("torchvision:"):
        kwargs["weights"] = None
    return get_model(arch, num_classes=data.n_classes, **kwargs)


def _teacher(config: dict[str, Any], data: Data, device: str) -> torch.nn.Module:
    return load_teacher(
        _build(config["teacher_arch"], data), config["teacher_weights"], device=device
    )


def distill(
    *,
    dataset: str,
    data_root: str | None,
    teacher_arch: str | None,
    teacher_weights: str,
    student_arch: str | None,
    epochs: int,
    out: str | Path,
    device: str = "cpu",
    subset: int | None = None,
    seed: int = 0,
    **distiller_params: Any,
) -> dict[str, Any]:
    """Distil a saved teacher into a student; save the student and its results."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(dataset, data_root, subset=subset, seed=seed)
    teacher_arch = teacher_arch or DEFAULT_ARCHS[dataset][0]
    student_arch = student_arch or DEFAULT_ARCHS[dataset][1]
    config = {
        "kind": "student",
        "dataset": dataset,
        "data_root": data_root,
        "subset": subset,
        "seed": seed,
        "teacher_arch": teacher_arch,
        "teacher_weights": str(Path(teacher_weights).resolve()),
        "student_arch": student_arch,
        "params": distiller_params,
    }
    estimator = _estimator(config, data, device, epochs)
    estimator.set_params(callbacks=_progress(list(estimator.callbacks or [])))
    estimator.fit(data.X_train, data.y_train)
    estimator.save_params(
        f_params=str(out / "student.pt"),
        f_projectors=str(out / "projectors.pt"),
        f_logit_projector=str(out / "logit_projector.pt"),
        f_history=str(out / "history.json"),
    )
    _save_json(out / "config.json", config)
    from .analysis import compare, format_markdown

    records = compare(
        {student_arch: estimator}, data.X_train, data.y_train, data.X_test, data.y_test
    )
    write_results(out, records, format_markdown(records))
    return records[-1]


def _estimator(
    config: dict[str, Any], data: Data, device: str, epochs: int
) -> ProjectorDistiller:
    params = recipe(config["dataset"], config["student_arch"], epochs)
    params.update(config["params"])
    return ProjectorDistiller(
        _teacher(config, data, device),
        _build(config["student_arch"], data),
        max_epochs=epochs,
        device=device,
        random_state=config["seed"],
        classes=np.arange(data.n_classes),
        train_split=None,
        verbose=0,
        **params,
    )


def load_run(
    folder: str | Path, *, device: str = "cpu"
) -> tuple[ProjectorDistiller, Data]:
    """Rebuild a saved student (and its teacher and data) from a run folder.

    Weights are loaded with ``weights_only=True``: a file carrying code is
    refused.
    """
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    if config.get("kind") != "student":
        raise ValueError(
            f"{folder} holds no distilled student (kind {config.get('kind')!r})."
        )
    data = load_data(
        config["dataset"],
        config["data_root"],
        subset=config["subset"],
        seed=config["seed"],
    )
    estimator = _estimator(config, data, device, epochs=0)
    estimator.set_params(cache_teacher=False)
    per_class = [np.flatnonzero(data.y_train == c)[:1] for c in range(data.n_classes)]
    sample = np.concatenate([i for i in per_class if len(i)] or [np.arange(2)])
    estimator.fit(data.X_train[sample], data.y_train[sample])  # 0 epochs: builds it
    estimator.load_params(
        f_params=str(folder / "student.pt"),
        f_projectors=str(folder / "projectors.pt"),
        f_logit_projector=str(folder / "logit_projector.pt"),
        f_history=str(folder / "history.json"),
    )
    return estimator, data


def search(
    *,
    dataset: str,
    data_root: str | None,
    teacher_arch: str | None,
    teacher_weights: str,
    student_arch: str | None,
    epochs: int,
    out: str | Path,
    grid: dict[str, list[Any]],
    cv: int = 3,
    device: str = "cpu",
    subset: int | None = None,
    seed: int = 0,
    n_jobs: int | None = None,
) -> list[dict[str, Any]]:
    """Cross-validated search (accuracy, ECE and CKA) over ``grid``."""
    from sklearn.model_selection import GridSearchCV

    from .metrics import SCORERS

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(dataset, data_root, subset=subset, seed=seed)
    config = {
        "dataset": dataset,
        "seed": seed,
        "params": {},
        "teacher_arch": teacher_arch or DEFAULT_ARCHS[dataset][0],
        "teacher_weights": teacher_weights,
        "student_arch": student_arch or DEFAULT_ARCHS[dataset][1],
    }
    estimator = _estimator(config, data, device, epochs)
    result = GridSearchCV(
        estimator,
        grid,
        scoring=SCORERS,
        refit="accuracy",
        cv=cv,
        n_jobs=n_jobs,
        verbose=2,
    ).fit(data.X_train, data.y_train)
    rows = []
    for i, params in enumerate(result.cv_results_["params"]):
        row = {"params": params}
        for name in SCORERS:
            row[f"mean_{name}"] = float(result.cv_results_[f"mean_test_{name}"][i])
            row[f"std_{name}"] = float(result.cv_results_[f"std_test_{name}"][i])
        rows.append(row)
    lines = ["| params | accuracy | ECE | CKA |", "|---|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row['params']} "
            f"| {row['mean_accuracy']:.4f} ± {row['std_accuracy']:.4f} "
            f"| {-row['mean_neg_expected_calibration_error']:.4f} "
            f"| {row['mean_cka']:.4f} |"
        )
    write_results(out, rows, "\n".join(lines))
    return rows
