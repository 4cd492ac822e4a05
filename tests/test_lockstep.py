"""Lockstep training equals separate fits, with one teacher forward per batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skorch.callbacks import LRScheduler

from projkd import ProjectorDistiller
from projkd.augment import RandomCropFlip
from projkd.lockstep import EpochSeed, fit_lockstep
from projkd.models import DigitsCNN

VARIANTS = [
    dict(n_projectors=0),
    dict(n_projectors=3),
    dict(ce_weight=0.1, kd_weight=0.9, feature_weight=0.0, logit_projector=True),
]


def make(teacher, variant, **kwargs):
    params = dict(
        student=DigitsCNN,
        student__width=4,
        student__n_features=32,
        max_epochs=2,
        batch_size=64,
        lr=0.05,
        optimizer=torch.optim.SGD,
        optimizer__momentum=0.9,
        train_transform=RandomCropFlip(padding=1),
        train_split=None,
        verbose=0,
        random_state=0,
        callbacks=[
            ("lr", LRScheduler(torch.optim.lr_scheduler.StepLR, step_size=1)),
            ("seed", EpochSeed(0)),
        ],
    )
    return ProjectorDistiller(teacher, **(params | variant | kwargs))


class CountingTeacher(torch.nn.Module):
    def __init__(self, teacher):
        super().__init__()
        self.teacher = teacher
        self.calls = 0

    def forward_features(self, x):
        self.calls += 1
        return self.teacher.forward_features(x)

    def forward_head(self, features):
        return self.teacher.forward_head(features)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@pytest.mark.parametrize(
    "fast",
    [{}, dict(mixed_precision="bf16", channels_last=True)],
    ids=["fp32", "bf16-channels-last"],
)
def test_each_variant_equals_its_separate_fit(teacher, small_digits, fast):
    # with bf16, the shared teacher forward must run under the same autocast
    # (and memory format) as each separate fit's
    X, y = small_digits
    counting = CountingTeacher(teacher).eval()
    together = fit_lockstep([make(counting, v, **fast) for v in VARIANTS], X, y)
    lockstep_calls = counting.calls
    separate = [make(teacher, v, **fast).fit(X, y) for v in VARIANTS]
    for joint, alone in zip(together, separate, strict=True):
        assert len(joint.history) == 2
        for key, value in alone.module_.state_dict().items():
            assert torch.equal(joint.module_.state_dict()[key], value), key
        for key, value in alone.projectors_.state_dict().items():
            assert torch.equal(joint.projectors_.state_dict()[key], value), key
        assert joint.history[:, "train_loss"] == alone.history[:, "train_loss"]
        np.testing.assert_array_equal(joint.predict_proba(X), alone.predict_proba(X))
    if not fast:  # (channels_last runs a converted copy of the teacher)
        n_batches = -(-len(X) // 64)
        # one forward per batch for all variants, plus each estimator's probe
        assert lockstep_calls == 2 * n_batches + len(VARIANTS)


def test_estimators_that_cannot_share_batches_are_refused(teacher, small_digits):
    X, y = small_digits
    with pytest.raises(ValueError, match="batch_size"):
        fit_lockstep([make(teacher, {}), make(teacher, {}, batch_size=32)], X, y)
    other = DigitsCNN(width=8, n_features=32).eval()
    with pytest.raises(ValueError, match="teacher"):
        fit_lockstep([make(teacher, {}), make(other, {})], X, y)
    with pytest.raises(ValueError, match="integer seed"):
        fit_lockstep([make(teacher, {}, random_state=None)], X, y)


def test_no_batch_stays_beside_its_step_after_a_lockstep_epoch(teacher, small_digits):
    """The batch shared by the group is forgotten once every estimator had
    it, even when the augmentation returns a view of the batch."""
    from projkd.training.batching import PREPARED

    def a_view(x):
        return x[:, :]

    X, y = small_digits
    before = len(PREPARED)
    group = [
        make(teacher, variant, max_epochs=1, train_transform=a_view)
        for variant in VARIANTS[:2]
    ]
    fit_lockstep(group, X, y)
    assert len(PREPARED) == before
