"""See what projectors do: comparison tables and plots.

The paper's three findings, for your own models: the train/test trade-off
(accuracy gap), similarity to the teacher (CKA) and calibration (ECE,
over-confidence). :func:`compare` makes the table; the ``plot_*`` functions
write PNG files with matplotlib (the ``plot`` extra), rendered headless.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .cost import cost_sentence, model_cost
from .features import layer_activation
from .metrics import (
    MinibatchCKA,
    expected_calibration_error,
    linear_cka,
    overconfidence,
    reliability_curve,
)

__all__ = [
    "compare",
    "cost_summary",
    "format_markdown",
    "layer_cka",
    "plot_accuracy_curves",
    "plot_cka_heatmap",
    "plot_reliability_diagrams",
    "to_dataframe",
]

TEACHER = "teacher"
COLUMNS = (
    "train_acc",
    "test_acc",
    "gap",
    "ece",
    "overconfidence",
    "cka",
    "params",
    "macs",
    "latency_ms",
    "images_per_s",
)


def _row(name: str, train_proba, y_train, test_proba, y_test, classes, n_bins, cka):
    predicted_train = classes[np.asarray(train_proba).argmax(axis=1)]
    predicted_test = classes[np.asarray(test_proba).argmax(axis=1)]
    train_acc = float(np.mean(predicted_train == y_train))
    test_acc = float(np.mean(predicted_test == y_test))
    return {
        "model": name,
        "train_acc": train_acc,
        "test_acc": test_acc,
        "gap": train_acc - test_acc,
        "ece": expected_calibration_error(
            y_test, test_proba, n_bins=n_bins, labels=classes
        ),
        "overconfidence": overconfidence(y_test, test_proba, labels=classes),
        "cka": cka,
    }


def compare(
    distillers: Mapping[str, Any],
    X_train: Any,
    y_train: Any,
    X_test: Any,
    y_test: Any,
    *,
    teacher: bool = True,
    n_bins: int = 15,
    cost: bool = False,
    cost_batch_size: int = 1,
    cost_repeats: int = 20,
) -> list[dict[str, Any]]:
    """Compare fitted distillers (and their teacher) on train and test data.

    Parameters
    ----------
    distillers : mapping of str to fitted ProjectorDistiller
        E.g. ``{"no projector": est0, "3 projectors": est3}``; they should
        share one teacher.
    X_train, y_train, X_test, y_test : array-like
    teacher : bool, default=True
        Add a first row for the teacher (taken from the first distiller).
    n_bins : int, default=15
        Bins of the ECE.
    cost : bool, default=False
        Add each network's cost (see :func:`projkd.cost.model_cost`):
        ``params``, ``macs`` (multiply-accumulates per image), and
        ``latency_ms``/``images_per_s`` measured at ``cost_batch_size`` on the
        device the network sits on (``batch_size`` and ``device`` recorded).
        Off by default: timing takes a few seconds per network.
    cost_batch_size : int, default=1
        Batch size of the speed measurement.
    cost_repeats : int, default=20
        Timed passes per network (the median is kept).

    Returns
    -------
    records : list of dict
        One per model: ``model``, ``train_acc``, ``test_acc``, ``gap`` (train
        minus test), ``ece``, ``overconfidence`` (mean confidence minus
        accuracy) and ``cka`` (linear CKA of penultimate features with the
        teacher's, on the test data; 1 for the teacher itself); with
        ``cost=True`` also the fields of :class:`projkd.cost.ModelCost`.

    Examples
    --------
    >>> from projkd.analysis import compare, format_markdown
    >>> # records = compare({"3 projectors": est}, X_train, y_train, X_test, y_test)
    >>> # print(format_markdown(records))
    >>> # records = compare({"3 projectors": est}, ..., cost=True)
    >>> # print(cost_summary(records))  # student: 6.0x fewer MACs, ...
    """
    if not distillers:
        raise ValueError("compare needs at least one fitted distiller.")
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    records = []
    first = next(iter(distillers.values()))
    classes = np.asarray(first.classes_)
    shape = _input_shape(first, X_test) if cost else ()

    def costs(model: nn.Module) -> dict[str, Any]:
        if not cost:
            return {}
        return model_cost(
            model, shape, batch_size=cost_batch_size, repeats=cost_repeats
        ).as_dict()

    if teacher:
        records.append(
            _row(
                TEACHER,
                first.predict_proba_teacher(X_train),
                y_train,
                first.predict_proba_teacher(X_test),
                y_test,
                classes,
                n_bins,
                1.0,
            )
            | costs(first.teacher_)
        )
    for name, estimator in distillers.items():
        cka = linear_cka(
            estimator.transform(X_test), estimator.transform_teacher(X_test)
        )
        records.append(
            _row(
                name,
                estimator.predict_proba(X_train),
                y_train,
                estimator.predict_proba(X_test),
                y_test,
                np.asarray(estimator.classes_),
                n_bins,
                cka,
            )
            | costs(estimator.module_)
        )
    return records


def _input_shape(estimator: Any, X: Any) -> tuple[int, ...]:
    """The shape of one sample: what ``fit`` saw, else the first of ``X``."""
    shape = getattr(estimator, "input_shape_", None)
    if shape is None:
        sample = X[0]
        sample = sample[0] if isinstance(sample, tuple | list) else sample
        shape = tuple(np.shape(sample))
    return tuple(int(s) for s in shape)


def cost_summary(records: Sequence[Mapping[str, Any]]) -> str:
    """One line per student: its cost and accuracy relative to the teacher.

    Parameters
    ----------
    records : sequence of dict
        From :func:`compare` with ``teacher=True`` and ``cost=True``.

    Returns
    -------
    summary : str
        E.g. ``"3 projectors: 6.0x fewer MACs, 4.1x faster at batch 1 on
        cpu, -3.2 points"``, one line per student.
    """
    rows = {record["model"]: record for record in records}
    if TEACHER not in rows or "macs" not in rows[TEACHER]:
        raise ValueError(
            "cost_summary needs the teacher's row with costs: call "
            "compare(..., teacher=True, cost=True)."
        )
    return "\n".join(
        cost_sentence(rows[TEACHER], record, name=name)
        for name, record in rows.items()
        if name != TEACHER
    )


def to_dataframe(records: Sequence[Mapping[str, Any]]) -> Any:
    """The records as a pandas DataFrame indexed by model (needs pandas)."""
    import pandas as pd

    return pd.DataFrame.from_records(list(records)).set_index("model")


def format_markdown(records: Sequence[Mapping[str, Any]]) -> str:
    """The records as a markdown table; accuracies, gap and ECE in percent.

    Cost columns (from ``compare(..., cost=True)``) show parameters and MACs
    in millions, and a line below the table states the batch size and device
    of the speed measurement.
    """
    percent = {"train_acc", "test_acc", "gap", "ece", "overconfidence"}
    columns = [c for c in COLUMNS if any(c in r for r in records)]
    header = "| model | " + " | ".join(_label(c) for c in columns) + " |"
    lines = [header, "|---|" + "---:|" * len(columns)]
    for record in records:
        cells = []
        for column in columns:
            value = record.get(column)
            if value is None:
                cells.append("")
            elif column in percent:
                cells.append(f"{100 * value:.2f}")
            elif column in _COST_FORMATS:
                cells.append(_COST_FORMATS[column](value))
            else:
                cells.append(f"{value:.3f}")
        lines.append(f"| {record['model']} | " + " | ".join(cells) + " |")
    speed = [r for r in records if r.get("latency_ms") is not None]
    if speed:
        lines.append(
            f"\nSpeed measured at batch {speed[0]['batch_size']} on "
            f"{speed[0]['device']} (median of repeats); MACs per image."
        )
    return "\n".join(lines)


_COST_FORMATS = {
    "params": lambda v: f"{v / 1e6:.2f}",
    "macs": lambda v: f"{v / 1e6:.1f}",
    "latency_ms": lambda v: f"{v:.2f}",
    "images_per_s": lambda v: f"{v:.0f}",
}


def _label(column: str) -> str:
    return {
        "train_acc": "train acc %",
        "test_acc": "test acc %",
        "gap": "gap %",
        "ece": "ECE %",
        "overconfidence": "over-conf. %",
        "cka": "CKA",
        "params": "params (M)",
        "macs": "MACs (M)",
        "latency_ms": "latency ms",
        "images_per_s": "images/s",
    }[column]


# ---------------------------------------------------------------------- plots
def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            "Plots need matplotlib: pip install 'projkd[plot]'."
        ) from error
    matplotlib.use("Agg")  # headless: files, never windows
    import matplotlib.pyplot as plt

    return plt


def plot_reliability_diagrams(
    predictions: Mapping[str, tuple[Any, Any]],
    path: str | Path,
    *,
    n_bins: int = 15,
    labels: Any = None,
) -> Path:
    """Reliability diagrams side by side, one panel per model.

    Parameters
    ----------
    predictions : mapping of str to (y_true, y_prob)
        E.g. ``{"teacher": (y, est.predict_proba_teacher(X)),
        "3 projectors": (y, est.predict_proba(X))}``.
    path : str or Path
        The PNG to write.
    n_bins : int, default=15
    labels : array-like or None
        The class of each probability column (``classes_``).

    Returns
    -------
    path : Path
    """
    plt = _pyplot()
    n = len(predictions)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
    for ax, (name, (y_true, y_prob)) in zip(axes[0], predictions.items(), strict=True):
        curve = reliability_curve(y_true, y_prob, n_bins=n_bins, labels=labels)
        ece = expected_calibration_error(y_true, y_prob, n_bins=n_bins, labels=labels)
        centers = (curve.edges[:-1] + curve.edges[1:]) / 2
        width = 1.0 / n_bins
        accuracy = np.nan_to_num(curve.accuracy)
        ax.bar(centers, accuracy, width=width, edgecolor="black", label="accuracy")
        gap = np.nan_to_num(curve.confidence) - accuracy
        ax.bar(
            centers,
            gap,
            bottom=accuracy,
            width=width,
            color="tab:red",
            alpha=0.35,
            edgecolor="tab:red",
            label="gap",
        )
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1),
            xlabel="confidence",
            title=f"{name}\nECE {100 * ece:.2f}%",
        )
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def _default_layers(model: nn.Module, limit: int = 12) -> list[str]:
    """Modules two levels down (blocks of stages; the members of a ModuleList,
    such as a Hugging Face ViT's blocks), evenly thinned to ``limit``."""
    names = []
    for name, child in model.named_children():
        grandchildren = []
        for n, grandchild in child.named_children():
            if isinstance(grandchild, (nn.ModuleList, nn.ModuleDict)):
                # containers never run; their members are the blocks
                grandchildren += [
                    f"{name}.{n}.{m}" for m, _ in grandchild.named_children()
                ]
            else:
                grandchildren.append(f"{name}.{n}")
        names.extend(grandchildren if grandchildren else [name])
    if len(names) > limit:
        keep = np.linspace(0, len(names) - 1, limit).round().astype(int)
        names = [names[i] for i in keep]
    return names


def layer_cka(
    student: nn.Module,
    teacher: nn.Module,
    X: Any,
    *,
    student_layers: Sequence[str] | None = None,
    teacher_layers: Sequence[str] | None = None,
    batch_size: int = 256,
    device: Any = "cpu",
) -> tuple[np.ndarray, list[str], list[str]]:
    """Minibatch CKA between every student layer and every teacher layer.

    Activations are caught with forward hooks, flattened per sample, and
    accumulated batch by batch in :class:`~projkd.metrics.MinibatchCKA`, so
    memory does not grow with the data.

    Parameters
    ----------
    student, teacher : torch.nn.Module
        Run in eval mode; their train/eval flags are restored afterwards.
    X : array-like or torch.Tensor
    student_layers, teacher_layers : sequence of str or None
        Module names; ``None`` picks up to 12 blocks of each network.
    batch_size : int, default=256
        Batches of fewer than 4 samples are skipped (minibatch CKA needs 4).
    device : str or torch.device, default="cpu"

    Returns
    -------
    cka : ndarray of shape (n_student_layers, n_teacher_layers)
    student_layers, teacher_layers : list of str
    """
    student_layers = list(student_layers or _default_layers(student))
    teacher_layers = list(teacher_layers or _default_layers(teacher))
    X = X if isinstance(X, torch.Tensor) else torch.as_tensor(np.asarray(X, np.float32))
    cka = [[MinibatchCKA() for _ in teacher_layers] for _ in student_layers]
    modes = [(m, m.training) for net in (student, teacher) for m in net.modules()]
    try:
        student.eval()
        teacher.eval()
        with torch.no_grad():
            for batch in X.split(batch_size):
                if len(batch) < 4:
                    continue
                batch = batch.to(device)
                s = _activations(student, student_layers, batch)
                t = _activations(teacher, teacher_layers, batch)
                for i, a in enumerate(s):
                    for j, b in enumerate(t):
                        cka[i][j].update(a, b)
    finally:
        for module, training in modes:
            module.training = training
    matrix = np.array([[c.compute() for c in row] for row in cka])
    return matrix, student_layers, teacher_layers


def _activations(
    model: nn.Module, names: list[str], x: torch.Tensor
) -> list[torch.Tensor]:
    modules = dict(model.named_modules())
    missing = [name for name in names if name not in modules]
    if missing:
        raise ValueError(f"{type(model).__name__} has no module(s) {missing}.")
    caught: dict[str, torch.Tensor] = {}

    def catcher(name: str) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            # the first call only (a module may run twice); returns None so
            # that the forward pass itself is left unchanged. A tuple or a
            # ModelOutput (Hugging Face blocks) counts by its first tensor.
            if name not in caught:
                caught[name] = layer_activation(output, name).flatten(1)

        return hook

    handles = [modules[name].register_forward_hook(catcher(name)) for name in names]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    uncalled = [name for name in names if name not in caught]
    if uncalled:
        raise ValueError(
            f"The module(s) {uncalled} of {type(model).__name__} never ran in its "
            "forward pass (a ModuleList is a container, not a layer); name the "
            "layers inside them instead."
        )
    return [caught[name] for name in names]


def plot_cka_heatmap(
    student: nn.Module,
    teacher: nn.Module,
    X: Any,
    path: str | Path,
    **kwargs: Any,
) -> Path:
    """A heatmap of :func:`layer_cka` between student and teacher layers.

    Parameters
    ----------
    student, teacher : torch.nn.Module
        E.g. ``est.module_`` and ``est.teacher_``.
    X : array-like or torch.Tensor
    path : str or Path
        The PNG to write.
    **kwargs
        Passed to :func:`layer_cka`.

    Returns
    -------
    path : Path
    """
    plt = _pyplot()
    matrix, rows, columns = layer_cka(student, teacher, X, **kwargs)
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * len(columns), 1.0 + 0.4 * len(rows)))
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="magma", origin="lower")
    ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set(xlabel="teacher layer", ylabel="student layer", title="CKA (minibatch)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return _save(fig, path)


def plot_accuracy_curves(
    histories: Mapping[str, Any], path: str | Path, *, dashed: str = "valid_acc"
) -> Path:
    """Train (solid) and validation (dashed) accuracy over epochs, per model.

    Parameters
    ----------
    histories : mapping of str to skorch History
        E.g. ``{"3 projectors": est.history}``; epochs need ``train_acc`` and
        may have ``valid_acc``.
    path : str or Path
    dashed : str, default="valid_acc"
        The history key of the dashed curve (e.g. ``"test_acc"`` recorded by
        a callback); its label is the key without ``_acc``.

    Returns
    -------
    path : Path
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for index, (name, history) in enumerate(histories.items()):
        color = f"C{index}"
        epochs = [row["epoch"] for row in history]
        ax.plot(
            epochs,
            [row.get("train_acc", np.nan) for row in history],
            color=color,
            label=f"{name} (train)",
        )
        valid = [row.get(dashed, np.nan) for row in history]
        if not np.all(np.isnan(valid)):
            label = f"{name} ({dashed.removesuffix('_acc')})"
            ax.plot(epochs, valid, color=color, linestyle="--", label=label)
    ax.set(xlabel="epoch", ylabel="accuracy", title="Accuracy over training")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
