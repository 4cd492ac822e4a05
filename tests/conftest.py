"""Shared fixtures: the bundled digits, tiny networks, a trained teacher."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.model_selection import train_test_split
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback
from torch import nn

from projkd.data import load_digits
from projkd.models import DigitsCNN


# ------------------------------------------------------------ mixed precision
class DtypeProbe(Callback):
    """Records the dtype of the student's first conv output in training."""

    def on_train_begin(self, net, **kwargs):
        self.dtypes = []
        conv = next(m for m in net.module_.modules() if isinstance(m, nn.Conv2d))
        self.handle = conv.register_forward_hook(
            lambda m, i, o: self.dtypes.append(o.dtype)
        )

    def on_train_end(self, net, **kwargs):
        self.handle.remove()


def _fp16_autocast_on_cpu() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            return torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float16
    except RuntimeError:
        return False


fp16_cpu = pytest.mark.skipif(
    not _fp16_autocast_on_cpu(), reason="this torch build has no CPU fp16 autocast"
)


FAST = dict(max_epochs=2, batch_size=128, train_split=None, verbose=0, lr=0.01)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def digits():
    X, y = load_digits()
    return train_test_split(X, y, test_size=0.4, stratify=y, random_state=0)


@pytest.fixture(scope="session")
def small_digits(digits):
    """300 training samples: enough to exercise every code path quickly."""
    X_train, _, y_train, _ = digits
    return X_train[:300], y_train[:300]


@pytest.fixture(scope="session")
def trained_teacher(digits):
    """A digits teacher of >= 95% test accuracy, in eval mode."""
    X_train, X_test, y_train, y_test = digits
    torch.manual_seed(0)
    net = NeuralNetClassifier(
        DigitsCNN(width=16, n_features=64),
        criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=3e-3,
        max_epochs=15,
        batch_size=64,
        train_split=None,
        verbose=0,
    ).fit(X_train, y_train)
    assert net.score(X_test, y_test) >= 0.95
    return net.module_.eval()


@pytest.fixture
def teacher():
    """An untrained teacher in eval mode."""
    return DigitsCNN(width=8, n_features=32).eval()
