"""The fast path: mixed precision, compile, channels_last, data on the device,
no per-batch host sync. Everything runs on the CPU; CUDA-only checks skip."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback
from skorch.dataset import ValidSplit
from torch import nn

from projkd import ProjectorDistiller
from projkd.models import DigitsCNN

from .conftest import DtypeProbe, fp16_cpu

FAST = dict(max_epochs=1, batch_size=100, train_split=None, verbose=0, lr=0.01)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def make(teacher, student=DigitsCNN, **kwargs):
    params = {**FAST, "student__width": 4, "random_state": 0, **kwargs}
    return ProjectorDistiller(teacher, student, **params)


class ConvNoFeatureApi(nn.Module):
    """A conv net without forward_features: features come from a hook."""

    def __init__(self, width: int = 4, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))


def _conv_weights(module):
    return [m.weight for m in module.modules() if isinstance(m, nn.Conv2d)]


class _Recorder:
    """A torch.compile backend that records the graphs it is given."""

    def __init__(self):
        self.graphs = []

    def __call__(self, gm, example_inputs):
        shapes = [tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor)]
        convs = [
            node
            for node in gm.graph.nodes
            if node.target in (torch.conv2d, torch.nn.functional.conv2d)
        ]
        self.graphs.append({"shapes": shapes, "convs": len(convs)})
        return gm.forward


# ------------------------------------------------------------ mixed precision
def test_bf16_autocast_is_active_in_training_and_predictions_are_float32(
    small_digits, teacher
):
    probe = DtypeProbe()
    est = make(teacher, mixed_precision="bf16", callbacks=[probe]).fit(*small_digits)
    assert probe.dtypes and set(probe.dtypes) == {torch.bfloat16}
    proba = est.predict_proba(small_digits[0][:20])
    assert proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    for key in ("train_loss", "train_ce", "train_feat", "train_acc"):
        assert np.isfinite(est.history[-1, key]), key
    assert est.grad_scaler_ is None  # bf16 needs no scaling


def test_default_precision_trains_in_float32(small_digits, teacher):
    probe = DtypeProbe()
    make(teacher, callbacks=[probe]).fit(*small_digits)
    assert set(probe.dtypes) == {torch.float32}


def test_bf16_loss_terms_are_float32(small_digits, teacher):
    est = make(teacher, mixed_precision="bf16").fit(*small_digits)
    loss = est.get_loss(
        est.infer(torch.as_tensor(small_digits[0][:8])),
        torch.as_tensor(est._encode(small_digits[1][:8])),
    )
    assert loss.dtype == torch.float32


@fp16_cpu
def test_fp16_trains_through_the_grad_scaler(small_digits, teacher):
    probe = DtypeProbe()
    est = make(teacher, mixed_precision="fp16", callbacks=[probe])
    est.fit(*small_digits)
    assert set(probe.dtypes) == {torch.float16}
    assert isinstance(est.grad_scaler_, torch.amp.GradScaler)
    assert est.grad_scaler_.get_scale() > 0
    assert np.isfinite(est.history[-1, "train_loss"])
    assert est.predict_proba(small_digits[0][:5]).dtype == np.float32


@fp16_cpu
def test_fp16_skips_a_step_whose_gradients_overflow(small_digits, teacher):
    X, y = small_digits
    est = make(teacher, mixed_precision="fp16", batch_size=len(X)).fit(X, y)
    # a loss scale so large that every scaled gradient overflows
    est.grad_scaler_ = torch.amp.GradScaler("cpu", init_scale=2.0**120)
    before = copy.deepcopy(dict(est.module_.named_parameters()))
    est.partial_fit(X, y)
    after = dict(est.module_.named_parameters())  # BatchNorm buffers do move
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert est.grad_scaler_.get_scale() < 2.0**120  # the scaler backed off


@fp16_cpu
def test_fp16_keeps_the_nonfinite_loss_semantics(small_digits, teacher):
    from projkd import NonFiniteLossError

    X, y = small_digits
    X = X.copy()
    X[:] = 1e30  # finite input, non-finite loss
    est = make(teacher, mixed_precision="fp16")
    with pytest.raises(NonFiniteLossError, match="epoch 1, batch 1"):
        est.fit(X, y)


def test_unknown_mixed_precision_is_refused_before_training(small_digits, teacher):
    with pytest.raises(ValueError, match="mixed_precision"):
        make(teacher, mixed_precision="fp8").fit(*small_digits)


# ------------------------------------------------------------------ compile
@pytest.mark.parametrize("student", [DigitsCNN, ConvNoFeatureApi])
def test_compile_compiles_the_students_training_forward(small_digits, teacher, student):
    """A graph holding the student's convolutions is compiled during the
    training steps (no validation split, no prediction), with and without
    forward_features; and the teacher's forward too when it is not cached."""
    recorder = _Recorder()
    est = make(
        teacher,
        student,
        compile=True,
        compile__backend=recorder,
        cache_teacher=False,
    )
    est.fit(*small_digits)
    student_convs = {tuple(w.shape) for w in _conv_weights(est.module_)}
    teacher_convs = {tuple(w.shape) for w in _conv_weights(teacher)}
    assert student_convs.isdisjoint(teacher_convs)  # width 4 vs 8
    compiled = [g for g in recorder.graphs if g["convs"]]
    assert any(student_convs & set(g["shapes"]) for g in compiled), recorder.graphs
    assert any(teacher_convs & set(g["shapes"]) for g in compiled), recorder.graphs
    assert np.isfinite(est.history[-1, "train_loss"])


def test_compiled_training_computes_what_eager_training_computes(small_digits, teacher):
    X, y = small_digits
    eager = make(teacher, ConvNoFeatureApi, cache_teacher=False).fit(X, y)
    compiled = make(
        teacher,
        ConvNoFeatureApi,
        cache_teacher=False,
        compile=True,
        compile__backend="eager",
    ).fit(X, y)
    np.testing.assert_allclose(
        eager.history[:, "train_loss"], compiled.history[:, "train_loss"], rtol=1e-5
    )
    np.testing.assert_allclose(
        eager.predict_proba(X[:10]), compiled.predict_proba(X[:10]), atol=1e-5
    )


def test_compile_leaves_the_users_teacher_without_hooks(small_digits):
    teacher = ConvNoFeatureApi(width=8).eval()
    make(
        teacher,
        ConvNoFeatureApi,
        cache_teacher=False,
        compile=True,
        compile__backend="eager",
    ).fit(*small_digits)
    assert all(not m._forward_hooks for m in teacher.modules())


# ------------------------------------------------------------- channels_last
class _FormatProbe(Callback):
    def on_train_begin(self, net, **kwargs):
        self.formats = []
        conv = next(m for m in net.module_.modules() if isinstance(m, nn.Conv2d))
        self.handle = conv.register_forward_hook(
            lambda m, i, o: self.formats.append(
                i[0].is_contiguous(memory_format=torch.channels_last)
            )
        )

    def on_train_end(self, net, **kwargs):
        self.handle.remove()


@pytest.mark.parametrize("cache_teacher", [True, False])
def test_channels_last_formats_networks_and_batches(
    small_digits, teacher, cache_teacher
):
    probe = _FormatProbe()
    est = make(
        teacher,
        student__width=8,
        channels_last=True,
        cache_teacher=cache_teacher,
        callbacks=[probe],
    ).fit(*small_digits)
    cl = torch.channels_last
    assert all(w.is_contiguous(memory_format=cl) for w in _conv_weights(est.module_))
    assert all(w.is_contiguous(memory_format=cl) for w in _conv_weights(est.teacher_))
    assert probe.formats and all(probe.formats)
    # the user's teacher keeps its format
    assert all(w.is_contiguous() for w in _conv_weights(teacher))


def test_channels_last_refuses_non_image_input():
    X = np.random.RandomState(0).randn(30, 6).astype(np.float32)
    y = np.arange(30) % 3
    teacher = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)).eval()
    student = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    est = ProjectorDistiller(teacher, student, channels_last=True, **FAST)
    with pytest.raises(ValueError, match=r"channels_last=True needs image batches"):
        est.fit(X, y)
    assert not hasattr(est, "module_")  # refused before training


# -------------------------------------------------------------- host syncs
def _count_syncs(monkeypatch):
    calls = {"n": 0}
    for name in ("item", "tolist"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            calls["n"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


def test_no_per_batch_item_or_tolist_in_training(small_digits, teacher, monkeypatch):
    """Loss terms and accuracy reach the history without one read-back per
    batch: the number of .item()/.tolist() calls of an epoch does not grow
    with its number of batches. (nonfinite_loss still reads one boolean per
    training batch.)"""
    X, y = small_digits
    counts = []
    for batch_size in (150, 30):  # 2 and 10 batches
        est = make(teacher, batch_size=batch_size).fit(X, y)  # warm, unpatched
        with monkeypatch.context() as patch:
            calls = _count_syncs(patch)
            est.partial_fit(X, y)
            counts.append(calls["n"])
        assert len(est.history[-1, "batches"]) == len(X) // batch_size
    assert counts[0] == counts[1], counts


def test_batch_history_is_filled_at_epoch_end(small_digits, teacher):
    X, y = small_digits
    est = make(teacher, batch_size=64, train_split=ValidSplit(5)).fit(X, y)
    batches = est.history[-1, "batches"]
    train = [b for b in batches if "train_loss" in b]
    valid = [b for b in batches if "valid_loss" in b]
    assert len(train) == 4 and len(valid) == 1
    for b in train:
        assert {"train_ce", "train_kd", "train_feat", "train_acc"} <= set(b)
        assert b["train_loss"] == pytest.approx(b["train_ce"] + 25 * b["train_feat"])
    sizes = np.array([b["train_batch_size"] for b in train])
    mean_ce = np.average([b["train_ce"] for b in train], weights=sizes)
    assert est.history[-1, "train_ce"] == pytest.approx(mean_ce)
    assert "valid_acc" in valid[0] and "valid_ce" in valid[0]


# ------------------------------------------------------------ data device
def test_data_device_cpu_and_invalid_values(small_digits, teacher):
    est = make(teacher, data_device="cpu").fit(*small_digits)
    assert np.isfinite(est.history[-1, "train_loss"])
    with pytest.raises(ValueError, match=r"data_device='gpu!' is not a device"):
        make(teacher, data_device="gpu!").fit(*small_digits)


@needs_cuda
def test_cuda_fit_keeps_data_on_the_device_and_restores_cudnn(small_digits, teacher):
    seen = {}

    class Spy(Callback):
        def on_batch_begin(self, net, batch=None, training=False, **kwargs):
            seen.setdefault("device", batch[1].device.type)
            seen["benchmark"] = torch.backends.cudnn.benchmark

    before = torch.backends.cudnn.benchmark
    X = torch.as_tensor(small_digits[0]).cuda()
    est = make(teacher, device="cuda", mixed_precision="bf16", callbacks=[Spy()])
    est.fit(X, small_digits[1])
    assert seen == {"device": "cuda", "benchmark": True}
    assert torch.backends.cudnn.benchmark == before
    assert X.device.type == "cuda"


@needs_cuda
def test_cuda_fit_with_host_data_prefetches(small_digits, teacher):
    est = make(teacher, device="cuda", data_device="cpu").fit(*small_digits)
    assert np.isfinite(est.history[-1, "train_loss"])
