"""Labels: the class list of a fit, and the encoding of labels as indices."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InputError

__all__ = ["encode_labels", "label_space"]


def label_space(y: np.ndarray | None, classes: Any) -> np.ndarray | None:
    """The classes of a fit: ``classes`` if given, else the sorted unique ``y``.

    Returns None for a Dataset without labels (its targets are class indices).

    Raises
    ------
    ValueError
        If ``classes`` has duplicates or ``y`` holds a single class.
    """
    if classes is not None:
        classes = np.asarray(classes)
        if len(np.unique(classes)) != len(classes):
            raise InputError(f"classes={list(classes)} contains duplicates.")
        return classes
    if y is None:
        return None
    classes = np.unique(y)
    if len(classes) < 2:
        raise InputError(
            f"y holds only one class ({classes[0]!r}); a classifier needs at least two."
        )
    return classes


def encode_labels(y: Any, classes: Any) -> np.ndarray:
    """Map labels to their indices in ``classes`` (which need not be sorted).

    Raises
    ------
    ValueError
        Naming the labels that are not in ``classes``.
    """
    classes = np.asarray(classes)
    y = np.asarray(y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else y)
    sorter = np.argsort(classes, kind="stable")
    position = np.searchsorted(classes, y, sorter=sorter).clip(0, len(classes) - 1)
    index = sorter[position]
    unknown = classes[index] != y
    if unknown.any():
        labels = sorted({str(label) for label in y[unknown]})[:5]
        raise InputError(
            f"y contains labels that are not in classes_ {classes.tolist()}: "
            f"{', '.join(labels)}. Pass classes= listing every label in the order "
            "of the teacher's outputs."
        )
    return index.astype(np.int64)
