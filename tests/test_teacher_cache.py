import gc
import types

import joblib
import numpy as np
import pytest
import torch
from sklearn.model_selection import GridSearchCV

from projkd import ProjectorDistiller
from projkd.augment import RandomCropFlip
from projkd.models import DigitsCNN
from projkd.teacher import (
    cached_teacher_outputs,
    clear_teacher_cache,
    compute_teacher_outputs,
    set_teacher_cache_limit,
    teacher_cache_info,
)
from projkd.teacher.fingerprint import PROBE_SIZE
from projkd.training.batching import ArrayBatches, ArrayDataset

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
    previous = set_teacher_cache_limit(2 * 2**30)
    yield
    set_teacher_cache_limit(previous)


def test_cached_fit_runs_the_teacher_once_per_sample(small_digits):
    X, y = small_digits
    teacher = DigitsCNN(width=8, n_features=32).eval()
    counter = Counter(teacher.fc)  # forward_head runs fc on every batch
    make(teacher, max_epochs=3).fit(X, y)
    probe = 2  # sizes the projectors
    assert counter.n == len(X) + probe + PROBE_SIZE  # + the cache's fingerprint
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
    probes = (2 + PROBE_SIZE) * (3 * 4 + 1)
    assert counter.n - probes <= 1.5 * len(X)


def test_joblib_memory_persists_across_estimators(tmp_path, small_digits):
    X, y = small_digits
    teacher = DigitsCNN(width=8, n_features=32).eval()
    memory = joblib.Memory(str(tmp_path), verbose=0)
    make(teacher, memory=memory).fit(X, y)
    clear_teacher_cache()
    counter = Counter(teacher.fc)  # forward_head runs fc on every batch
    make(teacher, memory=tmp_path).fit(X, y)
    assert counter.n == 2 + PROBE_SIZE  # the probes only


def test_changed_teacher_weights_invalidate_the_cache(small_digits):
    X, y = small_digits
    teacher = DigitsCNN(width=8, n_features=32).eval()
    make(teacher).fit(X, y)
    with torch.no_grad():
        teacher.fc.weight.add_(1.0)
    counter = Counter(teacher.fc)  # forward_head runs fc on every batch
    make(teacher).fit(X, y)
    assert counter.n == len(X) + 2 + PROBE_SIZE


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


def test_dataloader_fallback_carries_cached_outputs(small_digits):
    """A custom iterator (skorch's DataLoader, per-sample __getitem__) gets
    the same cached teacher outputs as the sliced-array path: the teacher
    runs once per sample, and training is the same."""
    X, y = small_digits
    teacher = DigitsCNN(width=8, n_features=32).eval()
    params = dict(random_state=0, iterator_train__shuffle=False, kd_weight=1.0)
    counter = Counter(teacher.fc)
    fallback = make(teacher, iterator_train__num_workers=0, **params).fit(X, y)
    assert counter.n == len(X) + 2 + PROBE_SIZE  # looked up, never run per batch
    clear_teacher_cache()
    sliced = make(teacher, **params).fit(X, y)
    for key in ("train_loss", "train_ce", "train_kd", "train_feat"):
        assert fallback.history[-1, key] == pytest.approx(
            sliced.history[-1, key], rel=1e-5
        ), key
    np.testing.assert_allclose(
        fallback.predict_proba(X), sliced.predict_proba(X), atol=1e-5
    )


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


# ------------------------------------------------ any tensor (issue #11, defect 3)
def test_tensors_that_require_grad_are_cached_and_left_alone(small_digits):
    X, y = small_digits
    teacher = DigitsCNN(width=8, n_features=32).eval()
    X_grad = torch.tensor(X, requires_grad=True)
    from_tensor = make(teacher, random_state=0).fit(X_grad, y)
    assert X_grad.grad is None  # no gradient ever reached the user's data
    clear_teacher_cache()
    from_array = make(teacher, random_state=0).fit(X, y)
    np.testing.assert_allclose(
        from_tensor.predict_proba(X), from_array.predict_proba(X), atol=1e-6
    )
    uncached = make(teacher, random_state=0, cache_teacher=False).fit(X_grad, y)
    assert X_grad.grad is None
    assert uncached.history[-1, "train_loss"] == pytest.approx(
        from_tensor.history[-1, "train_loss"], rel=1e-4
    )


def test_joblib_memory_accepts_tensors_that_require_grad(tmp_path, small_digits):
    X, y = small_digits
    teacher = DigitsCNN(width=8, n_features=32).eval()
    X_grad = torch.tensor(X, requires_grad=True)
    make(teacher, memory=tmp_path).fit(X_grad, y)
    clear_teacher_cache()
    counter = Counter(teacher.fc)
    make(teacher, memory=tmp_path).fit(X, y)  # same samples, as an array
    assert counter.n == 2 + PROBE_SIZE


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors_are_keyed_on_the_device(small_digits):
    X, y = small_digits
    teacher = DigitsCNN(width=8, n_features=32).eval()
    X_cuda = torch.tensor(X, device="cuda", requires_grad=True)
    counter = Counter(teacher.fc)
    est = make(teacher, device="cuda", max_epochs=2).fit(X_cuda, y)
    assert counter.n == len(X) + 2 + PROBE_SIZE
    assert X_cuda.grad is None
    est.fit(X_cuda, y)  # a second fit: served from the cache
    assert counter.n == len(X) + 2 * (2 + PROBE_SIZE)
    outputs = cached_teacher_outputs(teacher, est.teacher_, X_cuda, device="cuda")
    expected = compute_teacher_outputs(est.teacher_, X_cuda, device="cuda")
    torch.testing.assert_close(outputs.logits, expected.logits)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_host_and_device_samples_of_one_teacher_are_cached_apart(small_digits):
    # outputs stay on X's device: a host array after a CUDA tensor must not be
    # joined with the CUDA block of the same teacher
    X, _ = small_digits
    teacher = DigitsCNN(width=8, n_features=32).eval().cuda()
    on_device = cached_teacher_outputs(
        teacher, teacher, torch.tensor(X, device="cuda"), device="cuda"
    )
    on_host = cached_teacher_outputs(teacher, teacher, X, device="cuda")
    assert on_device.logits.device.type == "cuda"
    assert on_host.logits.device.type == "cpu"
    torch.testing.assert_close(on_host.logits, on_device.logits.cpu())


# --------------------------------------------- no stale outputs (defect 4)
class ScaledTeacher(DigitsCNN):
    """A teacher whose logits depend on things its state_dict does not hold:
    a non-persistent buffer and a Python attribute."""

    def __init__(self):
        super().__init__(width=8, n_features=32)
        self.register_buffer("scale", torch.ones(()), persistent=False)
        self.sharpness = 1.0

    def forward_head(self, features):
        return super().forward_head(features) * self.scale * self.sharpness


def _kd(teacher, X, y, **params):
    """The recorded KD term of one full-batch epoch with lr=0."""
    est = make(
        teacher,
        max_epochs=1,
        lr=0.0,
        batch_size=len(X),
        kd_weight=1.0,
        random_state=0,
        **params,
    )
    return est.fit(X, y).history[-1, "train_kd"]


def _sharpen_by_patching(teacher):
    head = teacher.forward_head
    teacher.forward_head = types.MethodType(lambda self, f: head(f) * 20, teacher)


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.scale.fill_(20.0),
        lambda t: setattr(t, "sharpness", 20.0),
        _sharpen_by_patching,
    ],
    ids=["non-persistent-buffer", "python-attribute", "patched-method"],
)
def test_a_changed_teacher_never_gets_stale_outputs(small_digits, change):
    X, y = small_digits
    teacher = ScaledTeacher().eval()
    before = _kd(teacher, X, y)
    with torch.no_grad():
        change(teacher)
    after = _kd(teacher, X, y)
    truth = _kd(teacher, X, y, cache_teacher=False)
    assert after == pytest.approx(truth, rel=1e-5)
    assert after != pytest.approx(before, rel=1e-3)


def test_teacher_cache_is_bounded_and_dies_with_the_teacher(small_digits):
    X, y = small_digits
    per_entry = len(X) * (10 + 32) * 4  # float32 logits and features
    first = DigitsCNN(width=8, n_features=32).eval()
    second = DigitsCNN(width=8, n_features=32).eval()
    make(first, max_epochs=1).fit(X, y)
    make(second, max_epochs=1).fit(X, y)
    info = teacher_cache_info()
    assert (info["teachers"], info["entries"], info["nbytes"]) == (2, 2, 2 * per_entry)

    set_teacher_cache_limit(per_entry)  # room for one: the least recent goes
    assert teacher_cache_info()["entries"] == 1
    counter = Counter(second.fc)
    make(second, max_epochs=1).fit(X, y)
    assert counter.n == 2 + PROBE_SIZE  # the most recent one was kept

    make(first, max_epochs=1).fit(X, y)  # now first is the most recent
    info = teacher_cache_info()
    assert info["nbytes"] <= per_entry and info["entries"] == 1

    del first
    gc.collect()
    assert teacher_cache_info()["entries"] == 0  # gone with its teacher

    set_teacher_cache_limit(0)
    make(second, max_epochs=1).fit(X, y)
    assert teacher_cache_info()["nbytes"] == 0
    with pytest.raises(ValueError, match="max_bytes"):
        set_teacher_cache_limit(-1)


def test_a_new_teacher_state_does_not_keep_old_entries_alive_forever(small_digits):
    X, y = small_digits
    teacher = DigitsCNN(width=8, n_features=32).eval()
    set_teacher_cache_limit(3 * len(X) * (10 + 32) * 4)
    for _ in range(5):
        make(teacher, max_epochs=1).fit(X, y)
        with torch.no_grad():
            teacher.fc.bias.add_(0.1)
    assert teacher_cache_info()["entries"] == 3
