import copy

import numpy as np
import pytest
import torch

from projkd.models import DigitsCNN

accelerate = pytest.importorskip("accelerate")


def test_one_process_fit_through_accelerate(small_digits, capsys):
    from projkd.accelerate import AcceleratedProjectorDistiller

    X, y = small_digits
    teacher = DigitsCNN(width=8, n_features=32).eval()
    state = copy.deepcopy(teacher.state_dict())
    est = AcceleratedProjectorDistiller(
        teacher,
        DigitsCNN,
        student__width=4,
        student__n_features=16,
        accelerator=accelerate.Accelerator(cpu=True),
        max_epochs=3,
        optimizer=torch.optim.Adam,
        lr=3e-3,
        batch_size=32,
        train_split=None,
        verbose=0,
        random_state=0,
    ).fit(X, y)
    losses = est.history[:, "train_loss"]
    assert losses[-1] < losses[0]
    assert capsys.readouterr().out == ""  # verbose=0 is quiet
    assert est.teacher_ is teacher  # never prepared, wrapped or moved
    for key, value in state.items():
        assert torch.equal(teacher.state_dict()[key], value)
    proba = est.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
