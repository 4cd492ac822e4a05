"""scikit-learn's estimator checks on ProjectorDistiller.

The teacher is an estimator (a lazily sized skorch MLP fitted on each fit's
data) and the student a lazily sized MLP, so that any number of features and
classes works, as the checks require.
"""

import numpy as np
import torch
from sklearn.utils.estimator_checks import parametrize_with_checks
from skorch import NeuralNetClassifier
from torch import nn

from projkd import ProjectorDistiller


class LazyMLP(nn.Module):
    """Flatten, a lazily sized hidden layer, a linear head."""

    def __init__(self, num_classes: int = 2, hidden: int = 32):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.LazyLinear(hidden), nn.ReLU())
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))


class LazyTeacher(NeuralNetClassifier):
    """A skorch MLP teacher sized from the labels it is fitted on."""

    def fit(self, X, y=None, **fit_params):
        self.set_params(module__num_classes=len(np.unique(y)))
        return super().fit(X, y, **fit_params)


def lazy_teacher():
    return LazyTeacher(
        LazyMLP,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=0.01,
        max_epochs=20,
        batch_size=32,
        train_split=None,
        verbose=0,
    )


# Each expected failure, with why it does not apply.
EXPECTED_FAILED_CHECKS: dict[str, str] = {
    "check_no_attributes_set_in_init": (
        "skorch's NeuralNet sets history_, initialized_ and virtual_params_ in "
        "__init__ and keeps **kwargs parameters (iterator_train__shuffle) as attributes"
    ),
}


@parametrize_with_checks(
    [
        ProjectorDistiller(
            lazy_teacher(),
            LazyMLP,
            n_projectors=2,
            feature_weight=1.0,
            optimizer=torch.optim.Adam,
            lr=0.01,
            max_epochs=20,
            batch_size=32,
            train_split=None,
            verbose=0,
            random_state=0,
        )
    ],
    expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
