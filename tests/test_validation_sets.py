"""Every validation path scores encoded labels (issue #11, defect 2).

The history's ``valid_acc`` must equal the estimator's own accuracy on the
validation samples at every epoch, whichever way the validation set was
given, so that EarlyStopping or Checkpoint on ``valid_acc`` pick the right
epochs.
"""

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback
from skorch.dataset import Dataset
from skorch.helper import predefined_split
from torch.utils.data import Subset, TensorDataset

from projkd import ProjectorDistiller
from projkd.models import DigitsCNN

from .conftest import FAST

REVERSED = np.arange(10)[::-1]  # classes_ in another order than sorted


class ScoreEachEpoch(Callback):
    """Records ``(valid_acc, score(X, y))`` at the end of every epoch."""

    def __init__(self, X, y):
        self.X, self.y = X, y

    def initialize(self):
        self.pairs_ = []
        return self

    def on_epoch_end(self, net, **kwargs):
        self.pairs_.append((net.history[-1, "valid_acc"], net.score(self.X, self.y)))


def make(**params):
    kwargs = dict(FAST, student__width=4, random_state=0)
    kwargs.update(params)
    return ProjectorDistiller(
        DigitsCNN(width=8, n_features=32).eval(), DigitsCNN, **kwargs
    )


def _labels(y, kind):
    return np.array([f"digit-{d}" for d in y]) if kind == "strings" else y


def _split(kind, X_valid, y_valid):
    if kind == "dataset-arrays":
        return predefined_split(Dataset(X_valid, y_valid))
    if kind == "dataset-tensors":
        return predefined_split(Dataset(torch.as_tensor(X_valid), y_valid))
    if kind == "tuple":
        return predefined_split((X_valid, y_valid))
    if kind == "callable":

        def split(dataset, y):  # the training part as given, a Subset to validate
            everything = Dataset(
                np.concatenate([X_valid, X_valid]), np.concatenate([y_valid, y_valid])
            )
            return dataset, Subset(everything, list(range(len(X_valid))))

        return split
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "path, labels",
    [
        ("dataset-arrays", "reversed-classes"),
        ("dataset-tensors", "strings"),
        ("tuple", "reversed-classes"),
        ("callable", "strings"),
    ],
)
def test_valid_acc_equals_the_accuracy_on_the_validation_set(digits, path, labels):
    X_train, X_test, y_train, y_test = digits
    X, y = X_train[:500], _labels(y_train[:500], labels)
    X_valid, y_valid = X_test[:200], _labels(y_test[:200], labels)
    spy = ScoreEachEpoch(X_valid, y_valid)
    make(
        max_epochs=6,
        batch_size=64,
        lr=1e-2,
        optimizer=torch.optim.Adam,
        feature_weight=0.0,
        classes=REVERSED if labels == "reversed-classes" else None,
        train_split=_split(path, X_valid, y_valid),
        callbacks=[spy],
    ).fit(X, y)
    assert spy.pairs_[-1][1] > 0.5  # a student that learnt: chance is 0.1
    for valid_acc, score in spy.pairs_:
        assert valid_acc == pytest.approx(score, abs=1e-6)


def test_a_torch_dataset_of_class_indices_is_used_as_is(small_digits):
    """Targets of a plain torch Dataset are class indices: not re-encoded."""
    X, y = small_digits
    valid = TensorDataset(torch.as_tensor(X[:100]), torch.as_tensor(y[:100]))
    spy = ScoreEachEpoch(X[:100], REVERSED[y[:100]])
    make(
        max_epochs=1,
        classes=REVERSED,
        train_split=predefined_split(valid),
        callbacks=[spy],
    ).fit(X, REVERSED[y])
    valid_acc, score = spy.pairs_[-1]
    assert valid_acc == pytest.approx(score, abs=1e-6)


def test_a_validation_set_with_unknown_labels_is_refused(small_digits):
    X, y = small_digits
    est = make(train_split=predefined_split(Dataset(X[:20], np.full(20, 42))))
    with pytest.raises(ValueError, match=r"validation set: y contains labels .*42"):
        est.fit(X, y)
