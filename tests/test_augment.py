import numpy as np
import pytest
import torch
from torch import nn

from projkd import ProjectorDistiller
from projkd.augment import RandomCropFlip

from .conftest import FAST


def test_each_sample_is_a_shifted_window_of_its_padded_self():
    x = torch.rand(64, 2, 6, 7)
    out = RandomCropFlip(padding=2, flip_probability=0.5)(x)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    offsets, flips = set(), 0
    for i in range(64):
        found = [
            (r, c, f)
            for r in range(5)
            for c in range(5)
            for f in (False, True)
            if torch.equal(
                out[i],
                (lambda w: w.flip(2) if f else w)(padded[i, :, r : r + 6, c : c + 7]),
            )
        ]
        assert found, i
        offsets.add(found[0][:2])
        flips += found[0][2]
    assert len(offsets) > 5  # drawn per sample, not once per batch
    assert 10 < flips < 54


def test_padding_zero_is_identity_or_flip():
    x = torch.rand(4, 3, 5, 5)
    assert torch.equal(RandomCropFlip(0, 0.0)(x), x)
    assert torch.equal(RandomCropFlip(0, 1.0)(x), x.flip(3))


@pytest.mark.parametrize("kwargs", [{"padding": -1}, {"flip_probability": 2.0}])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        RandomCropFlip(**kwargs)


class Recorder(nn.Module):
    """A tiny classifier that remembers the inputs it saw."""

    def __init__(self, log):
        super().__init__()
        self.log = log
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        self.log.append(x.detach().clone())
        return self.fc(x.flatten(1))


def test_teacher_sees_the_augmented_view_and_evaluation_never_augments():
    teacher_log, student_log = [], []
    X = torch.rand(12, 1, 4, 4).numpy()
    y = np.arange(12) % 3
    est = ProjectorDistiller(
        Recorder(teacher_log).eval(),
        Recorder(student_log),
        n_projectors=1,
        train_transform=RandomCropFlip(padding=1),
        **{**FAST, "batch_size": 12, "max_epochs": 1},
        iterator_train__shuffle=False,
    ).fit(X, y)
    seen_student = est.module_.log  # the fitted copy's log
    train_batches = [t for t in seen_student if t.shape[0] == 12]
    assert not torch.equal(train_batches[0], torch.as_tensor(X))  # augmented
    assert any(torch.equal(train_batches[0], t) for t in est.teacher_.log)
    seen_student.clear()
    est.predict(X)
    assert torch.equal(seen_student[0], torch.as_tensor(X))


def test_train_transform_is_a_settable_clonable_parameter(teacher):
    from sklearn.base import clone

    from projkd.models import DigitsCNN

    est = ProjectorDistiller(teacher, DigitsCNN, **FAST)
    est.set_params(train_transform=RandomCropFlip(padding=1))
    copy = clone(est)
    assert isinstance(copy.train_transform, RandomCropFlip)
    assert copy.train_transform.padding == 1


def test_padding_is_black_in_the_normalised_space():
    """The reference pads raw images with black; after normalisation black is
    -mean/std per channel (0 would be the mean colour)."""
    mean, std = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
    augment = RandomCropFlip.for_normalization(mean, std, flip_probability=0.0)
    raw = torch.rand(64, 3, 8, 8) + 0.1  # no black pixel in the image itself
    norm = (raw - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    out = augment(norm)
    back = out * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    # every sample shifted by >= 1 pixel shows a border of exact black
    black = back.abs().amax(dim=1) < 1e-5
    shifted = ~torch.isclose(out, norm).all(dim=(1, 2, 3))
    assert shifted.any()
    assert black[shifted].flatten(1).any(dim=1).all()
    assert not black[~shifted].any()


def test_fill_must_match_the_channels():
    with pytest.raises(ValueError, match="2 values but the batch has 3 channels"):
        RandomCropFlip(fill=(0.0, 1.0))(torch.zeros(2, 3, 8, 8))
