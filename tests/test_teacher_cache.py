import joblib
import numpy as np
import pytest
import torch
from sklearn.model_selection import GridSearchCV

from projkd import ProjectorDistiller
from projkd.augment import RandomCropFlip
from projkd.batching import ArrayBatches, ArrayDataset
from projkd.models import DigitsCNN
from projkd.teacher_cache import clear_teacher_cache

from .conftest import FAST


class Counter:
    """Counts the samples a module's forward sees."""

    def __init__(self, module):
        self.n = 0
        module.register_forward_hook(self)

    def __call__(self, module, args, output):
        self.n += len(args[0])


def make(teacher, **params):
    kwargs = dict(FAST, student=DigitsCNN, student__width=4, student__n_features=16)
    kwargs.update(params)
    return ProjectorDistiller(teacher, **kwargs)


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_teacher_cache()


def test_cached_fit_runs_the_teacher_once_per_sample(small_digits):
    X, y = small_digits
    teacher = DigitsCNN(width=8, n_features=32).eval()
    counter = Counter(teacher.fc)  # forward_head runs fc on every batch
    make(teacher, max_epochs=3).fit(X, y)
    probe = 2
    assert counter.n == len(X) + probe
    counter.n = 0
    make(teacher, max_epochs=3, cache_teacher=False).fit(X, y)
    assert counter.n == 3 * len(X) + probe


def test_cached_and_uncached_training_agree(small_digits):
    X, y = small_digits
    teacher = DigitsCNN(width=8, n_features=32).eval()
    cached = make(teacher, random_state=0).fit(X, y)
    uncached = make(teacher, random_state=0, cache_teacher=False).fit(X, y)
    for key in ("train_loss", "train_feat"):
        assert cached.history[-1, key] == pytest.approx(
            uncached.history[-1, key], rel=1e-4
        )
    np.testing.assert_allclose(
        cached.predict_proba(X), uncached.predict_proba(X), atol=1e-4
    )


def test_a_search_runs_the_teacher_about_once_per_sample(small_digits):
    X, y = small_digits
    teacher = DigitsCNN(width=8, n_features=32).eval()
    counter = Counter(teacher.fc)  # forward_head runs fc on every batch
    GridSearchCV(make(teacher), {"n_projectors": [1, 2, 3, 4]}, cv=3).fit(X, y)
    probes = 2 * (3 * 4 + 1)
    assert counter.n - probes <= 1.5 * len(X)


def test_joblib_memory_persists_across_estimators(tmp_path, small_digits):
    X, y = small_digits
    teacher = DigitsCNN(width=8, n_features=32).eval()
    memory = joblib.Memory(str(tmp_path), verbose=0)
    make(teacher, memory=memory).fit(X, y)
    clear_teacher_cache()
    counter = Counter(teacher.fc)  # forward_head runs fc on every batch
    make(teacher, memory=tmp_path).fit(X, y)
    assert counter.n == 2  # the probe only


def test_changed_teacher_weights_invalidate_the_cache(small_digits):
    X, y = small_digits
    teacher = DigitsCNN(width=8, n_features=32).eval()
    make(teacher).fit(X, y)
    with torch.no_grad():
        teacher.fc.weight.add_(1.0)
    counter = Counter(teacher.fc)  # forward_head runs fc on every batch
    make(teacher).fit(X, y)
    assert counter.n == len(X) + 2


def test_cache_with_random_augmentation_is_refused(small_digits, teacher):
    est = make(teacher, cache_teacher=True, train_transform=RandomCropFlip(1))
    with pytest.raises(ValueError, match="cache_teacher=True"):
        est.fit(*small_digits)


def test_auto_turns_the_cache_off_with_augmentation(small_digits):
    X, y = small_digits
    teacher = DigitsCNN(width=8, n_features=32).eval()
    counter = Counter(teacher.fc)  # forward_head runs fc on every batch
    make(teacher, max_epochs=2, train_transform=RandomCropFlip(1)).fit(X, y)
    assert counter.n == 2 * len(X) + 2


def test_dataloader_fallback_carries_cached_outputs(small_digits, teacher):
    X, y = small_digits
    est = make(teacher, iterator_train__num_workers=0).fit(X, y)
    assert np.isfinite(est.history[-1, "train_loss"])


def test_array_batches_cover_every_sample_once():
    dataset = ArrayDataset(np.arange(10, dtype=np.float32)[:, None], np.arange(10))
    indices = np.array([1, 3, 4, 7, 8, 9])
    batches = list(ArrayBatches(dataset, indices, batch_size=4, shuffle=True))
    seen = np.concatenate([y.numpy() for _, y in batches])
    assert sorted(seen.tolist()) == indices.tolist()
    assert [len(y) for _, y in batches] == [4, 2]
    dropped = ArrayBatches(dataset, indices, batch_size=4, drop_last=True)
    assert len(dropped) == 1 and len(list(dropped)) == 1
    ordered = np.concatenate([y.numpy() for _, y in ArrayBatches(dataset, indices, 4)])
    assert ordered.tolist() == indices.tolist()
