"""The paper's pictures: reliability diagrams, layer CKA heatmaps, accuracy
curves, written as PNG files with matplotlib (the ``plot`` extra), headless."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..metrics import expected_calibration_error, reliability_curve
from .layers import layer_cka

__all__ = [
    "plot_accuracy_curves",
    "plot_cka_heatmap",
    "plot_reliability_diagrams",
    "pyplot",
    "save_figure",
]


def pyplot() -> Any:
    """matplotlib's ``pyplot`` on the headless Agg backend (the ``plot`` extra)."""
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
    plt = pyplot()
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
    return save_figure(fig, path)


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
    plt = pyplot()
    matrix, rows, columns = layer_cka(student, teacher, X, **kwargs)
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * len(columns), 1.0 + 0.4 * len(rows)))
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="magma", origin="lower")
    ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set(xlabel="teacher layer", ylabel="student layer", title="CKA (minibatch)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return save_figure(fig, path)


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
    plt = pyplot()
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
    return save_figure(fig, path)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (its folder made) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
