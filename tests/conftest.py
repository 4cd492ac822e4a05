"""Shared fixtures: the bundled digits, tiny networks, a trained teacher;
the command line run in a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.model_selection import train_test_split
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback
from torch import nn

from projkd.data import load_digits
from projkd.models import DigitsCNN

# --------------------------------------------------------------- command line
ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, env=None, timeout=600):
    """``python -m projkd ARGS`` in a process of its own (this checkout's)."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "projkd", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path, **(env or {})},
        timeout=timeout,
    )


def one_error_line(result, command, *words):
    """The one line a user's mistake prints: exit 2, no traceback, the line
    ``projkd <command>: error: ...`` last on stderr, holding ``words``."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith(f"projkd {command}: error:")]
    assert len(errors) == 1 and errors[0] == lines[-1], result.stderr
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


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
