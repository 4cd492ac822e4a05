"""One way to read a network's features, on every path; the features of raw
timm-style token networks; one teacher cache interface with the same outputs
from the in-process and the joblib backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import projkd.teacher.cache as cache_module
from projkd import ProjectorDistiller
from projkd.features import FeatureError, forward_with_features, logits_of
from projkd.models import DigitsCNN
from projkd.teacher import (
    cached_teacher_outputs,
    clear_teacher_cache,
    compute_teacher_outputs,
)
from projkd.training.compiling import FeatureForward

from .conftest import FAST
from .test_features import LambdaCallback

EAGER_COMPILE = {"backend": "eager", "fullgraph": True}


@pytest.fixture(autouse=True)
def _fresh_compiler():
    """Compile from scratch: every network's training forward is one code
    object, and torch bounds its recompiles (8 shapes and structures)."""
    torch.compiler.reset()


def run_every_way(model, x, layer=None):
    """``(logits, features)`` of each path: the function, the training
    forward with a hook per call, with a permanent tap, and compiled."""
    forwards = {
        "eager": FeatureForward(model, layer),
        "tap": FeatureForward(model, layer, tap=True),
        "compiled": FeatureForward(model, layer, EAGER_COMPILE),
    }
    results = {"function": forward_with_features(model, x, layer=layer)}
    for name, forward in forwards.items():
        output, features, maps = forward(x)  # the output as the network gave it
        assert maps == ()  # no hint layers
        results[name] = (logits_of(output), features)
    return results


# ------------------------------------------------------- timm-style tokens
class TokenNet(nn.Module):
    """A tiny transformer-like net in timm's convention: ``forward_features``
    returns ``(N, L, D)`` tokens (a class token first), ``forward_head``
    pools the class token and ``pre_logits=True`` stops before the
    classifier. L = 5 tokens, D = 6 channels: the two widths differ."""

    def __init__(self, pre_logits: bool = True) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 6)
        self.cls = nn.Parameter(torch.randn(1, 1, 6))
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, 3)
        if not pre_logits:  # the same head, without the argument
            self.forward_head = self._head

    def forward_features(self, x):  # x: (N, 4 tokens, 4)
        tokens = self.embed(x)
        return self.norm(torch.cat([self.cls.expand(len(x), -1, -1), tokens], 1))

    def forward_head(self, x, pre_logits: bool = False):
        x = x[:, 0]
        return x if pre_logits else self.head(x)

    def _head(self, x):
        return self.head(x[:, 0])

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@pytest.mark.parametrize("way", ["function", "eager", "tap", "compiled"])
def test_token_features_are_forward_head_pre_logits(way):
    model = TokenNet().eval()
    x = torch.randn(2, 4, 4)
    logits, features = run_every_way(model, x)[way]
    with torch.no_grad():
        tokens = model.forward_features(x)
        expected = model.forward_head(tokens, pre_logits=True)
        torch.testing.assert_close(features, expected)  # (2, 6), not (2, 5)
        torch.testing.assert_close(logits, model(x))


@pytest.mark.parametrize("way", ["function", "eager", "tap", "compiled"])
def test_tokens_without_pre_logits_are_refused(way):
    model = TokenNet(pre_logits=False).eval()
    with pytest.raises(FeatureError, match=r"3-D.*\(2, 5, 6\).*student_layer="):
        run_every_way(model, torch.randn(2, 4, 4))[way]


def test_the_distiller_refuses_unpoolable_tokens_before_training():
    X = np.random.RandomState(0).randn(20, 4, 4).astype(np.float32)
    y = np.arange(20) % 3
    steps = []
    est = ProjectorDistiller(
        TokenNet(pre_logits=False).eval(),
        TokenNet(),
        callbacks=[("spy", LambdaCallback(lambda: steps.append(1)))],
        **FAST,
    )
    with pytest.raises(FeatureError, match=r"\(the teacher\).*teacher_layer="):
        est.fit(X, y)
    assert steps == []


RAW_VIT = dict(img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2)
RAW_VIT["num_classes"] = 10


def raw_vit():
    """timm's ViT, not wrapped by projkd: 17 tokens of 16 channels."""
    timm = pytest.importorskip("timm")
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, **RAW_VIT)
    return vit.eval()


@pytest.mark.parametrize("way", ["function", "eager", "tap", "compiled"])
def test_raw_timm_vit_features_are_its_pre_logits(way):
    model = raw_vit()
    x = torch.randn(2, 3, 32, 32)
    logits, features = run_every_way(model, x)[way]
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(x), pre_logits=True)
        torch.testing.assert_close(features, expected)
        torch.testing.assert_close(logits, model(x))
    assert features.shape == (2, 16)


def test_a_raw_timm_vit_distils_its_embedding_width():
    X = np.random.RandomState(0).randn(40, 3, 32, 32).astype(np.float32)
    y = np.arange(40) % 10
    student = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 8), nn.ReLU())
    student.append(nn.Linear(8, 10))
    est = ProjectorDistiller(raw_vit(), student, **{**FAST, "max_epochs": 1})
    est.fit(X, y)
    assert est.n_teacher_features_ == 16  # the embedding, not the 17 tokens


# ------------------------------------------------- one reading, every path
class Net(nn.Module):
    """A conv net without forward_features, with a named 4-D layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 5, 3)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean(dim=(2, 3)))


@pytest.mark.parametrize(
    "build, layer",
    [
        (lambda: nn.Sequential(nn.Linear(4, 7), nn.ReLU(), nn.Linear(7, 3)), None),
        (Net, None),
        (Net, "conv"),
        (lambda: DigitsCNN(width=4, n_features=6), None),
    ],
    ids=["mlp", "hooked-linear", "named-layer", "forward-features"],
)
def test_every_path_reads_the_same_features(build, layer):
    model = build().eval()
    x = torch.randn(3, 4) if isinstance(model, nn.Sequential) else None
    x = torch.randn(3, 1, 8, 8) if x is None else x
    results = run_every_way(model, x, layer)
    reference = results.pop("function")
    for way, (logits, features) in results.items():
        torch.testing.assert_close(logits, reference[0], msg=way)
        torch.testing.assert_close(features, reference[1], msg=way)


# --------------------------------------------------- one cache interface
@pytest.fixture
def cache_teacher():
    clear_teacher_cache()
    yield DigitsCNN(width=4, n_features=8).eval()
    clear_teacher_cache()


@pytest.mark.parametrize("precision", [None, "bf16"], ids=["fp32", "bf16"])
@pytest.mark.parametrize("as_tensor", [False, True], ids=["array", "tensor"])
def test_joblib_and_in_process_caches_give_the_same_outputs(
    tmp_path, small_digits, cache_teacher, precision, as_tensor
):
    X = small_digits[0][:40]
    X = torch.as_tensor(X) if as_tensor else X
    kwargs = dict(mixed_precision=precision, batch_size=16)
    teacher = cache_teacher
    in_process = cached_teacher_outputs(teacher, teacher, X, **kwargs)
    written = cached_teacher_outputs(teacher, teacher, X, memory=tmp_path, **kwargs)
    read = cached_teacher_outputs(teacher, teacher, X, memory=tmp_path, **kwargs)
    truth = compute_teacher_outputs(teacher, X, **kwargs)
    dtype = torch.bfloat16 if precision else torch.float32
    for outputs in (in_process, written, read):
        for got, expected in zip(outputs, truth, strict=True):
            assert (got.dtype, got.device) == (dtype, torch.device("cpu"))
            assert torch.equal(got, expected)  # bit for bit


class DeviceResident(torch.Tensor):
    """A CPU tensor standing for one in accelerator memory: like a CUDA
    tensor it has no ``.numpy()`` until copied to the host (``.cpu()`` or
    ``.to("cpu")``), which gives a plain tensor."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.numpy:
            raise TypeError(
                "can't convert cuda:0 device type tensor to numpy. Use "
                "Tensor.cpu() to copy the tensor to host memory first."
            )
        result = super().__torch_function__(func, types, args, kwargs)
        to_host = func is torch.Tensor.cpu or (
            func is torch.Tensor.to
            and any(str(a) == "cpu" for a in (*args[1:], kwargs.get("device")) if a)
        )
        return result.as_subclass(torch.Tensor) if to_host else result


def on_device(outputs):
    return type(outputs)(*(t.as_subclass(DeviceResident) for t in outputs))


def test_joblib_cache_copies_device_outputs_to_the_host(
    tmp_path, small_digits, cache_teacher, monkeypatch
):
    X = small_digits[0][:20]
    truth = compute_teacher_outputs(cache_teacher, X)
    monkeypatch.setattr(
        cache_module,
        "compute_teacher_outputs",
        lambda *args, **kwargs: on_device(compute_teacher_outputs(*args, **kwargs)),
    )
    outputs = cached_teacher_outputs(cache_teacher, cache_teacher, X, memory=tmp_path)
    for got, expected in zip(outputs, truth, strict=True):
        assert torch.equal(got, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_host_arrays_restore_dtype_and_values_exactly(dtype):
    from projkd.teacher.cache import from_host_array, to_host_array

    tensor = (torch.randn(5, 3) * 100).to(dtype)
    tensor[0, 0] = float("nan")
    array = to_host_array(tensor.as_subclass(DeviceResident))
    assert isinstance(array, np.ndarray)
    restored = from_host_array(array, dtype, "cpu")
    assert type(restored) is torch.Tensor and restored.dtype == dtype
    assert torch.equal(restored.view(torch.uint8), tensor.view(torch.uint8))
    array.setflags(write=False)  # joblib's mmap_mode gives read-only arrays
    assert from_host_array(array, dtype, "cpu").view(torch.uint8).sum() >= 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", [None, "bf16"], ids=["fp32", "bf16"])
def test_joblib_cache_of_cuda_data_stays_on_the_device(
    tmp_path, small_digits, cache_teacher, precision
):
    teacher = cache_teacher.cuda()
    X = torch.as_tensor(small_digits[0][:40], device="cuda")
    kwargs = dict(device="cuda", mixed_precision=precision)
    in_process = cached_teacher_outputs(teacher, teacher, X, **kwargs)
    for _ in range(2):  # written, then read
        outputs = cached_teacher_outputs(teacher, teacher, X, memory=tmp_path, **kwargs)
        for got, expected in zip(outputs, in_process, strict=True):
            assert (got.dtype, got.device) == (expected.dtype, X.device)
            assert torch.equal(got, expected)


def test_an_estimator_pickled_by_0_1_0_keeps_one_feature_tap():
    import pickle
    import warnings
    from pathlib import Path

    from projkd.training.compiling import FeatureTap

    data = Path(__file__).parent / "data"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # projkd.compiling
        est = pickle.loads((data / "distiller_0.1.0.pkl").read_bytes())
    expected = np.load(data / "distiller_0.1.0.npz")
    X = expected["X"]
    # to float32 rounding (written by another torch)
    np.testing.assert_allclose(est.predict_proba(X), expected["proba"], rtol=1e-6)
    est.partial_fit(X, est.classes_[np.arange(len(X)) % len(est.classes_)])
    hooks = [h for m in est.module_.modules() for h in m._forward_hooks.values()]
    assert len(hooks) == 1 and isinstance(hooks[0], FeatureTap)
    assert hooks[0].value is None  # taken at every step: no tensor kept
