"""Layer-by-layer similarity of two networks (CKA between their blocks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..features import layer_activation
from ..metrics import MinibatchCKA

__all__ = ["layer_cka"]


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
        raise InputError(f"{type(model).__name__} has no module(s) {missing}.")
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
        raise InputError(
            f"The module(s) {uncalled} of {type(model).__name__} never ran in its "
            "forward pass (a ModuleList is a container, not a layer); name the "
            "layers inside them instead."
        )
    return [caught[name] for name in names]
