"""ProjectorDistiller in the vocabulary of skorch's own test suite.

skorch's tests build ``net_cls(module, **kwargs)`` and read ``module`` back
from ``get_params``; the distiller calls that network ``student`` (and
takes skorch's ``module__*`` options for it as they are). The teacher is a
small network trained on skorch's classification data, and distillation is
really on: a feature term and a KD term besides the cross-entropy.
"""

from __future__ import annotations

from typing import Any

import torch
from sklearn.datasets import make_classification
from torch import nn

from projkd import ProjectorDistiller


def trained_teacher() -> nn.Module:
    """A 20-32-2 MLP trained on skorch's ``classifier_data``, frozen."""
    X, y = make_classification(1000, 20, n_informative=10, random_state=0)
    X, y = torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        teacher = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 2))
        optimizer = torch.optim.Adam(teacher.parameters(), lr=0.01)
        for _ in range(200):
            index = torch.randint(0, len(X), (128,))
            loss = nn.functional.cross_entropy(teacher(X[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return teacher.eval().requires_grad_(False)


TEACHER = trained_teacher()


class SuiteDistiller(ProjectorDistiller):
    """A distiller built as ``SuiteDistiller(module, **skorch_params)``.

    skorch's classifier defaults where the distiller's differ for a reason
    the suite does not share: ``criterion=NLLLoss`` (the suite's networks
    output probabilities) and no shuffling.
    """

    def __init__(
        self,
        module: Any = None,
        *,
        student: Any = None,
        teacher: Any = TEACHER,
        criterion: Any = torch.nn.NLLLoss,
        feature_weight: float = 1.0,
        kd_weight: float = 0.5,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("iterator_train__shuffle", False)
        kwargs.setdefault("nonfinite_loss", "skip")
        super().__init__(
            teacher,
            module if student is None else student,
            criterion=criterion,
            feature_weight=feature_weight,
            kd_weight=kd_weight,
            **kwargs,
        )

    def _get_param_names(self) -> list[str]:
        return ["module" if n == "student" else n for n in super()._get_param_names()]
