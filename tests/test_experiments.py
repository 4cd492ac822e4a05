"""The application layer: recipes, the run specification and what it implies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback

from projkd import ProjectorDistiller
from projkd.augment import RandomCropFlip
from projkd.data import CIFAR100_MEAN, CIFAR100_STD, load_digits
from projkd.experiments import (
    FAST_SETTINGS,
    Data,
    RunSpec,
    TeacherNet,
    distiller_setup,
    launched_world_size,
    recipe,
    speed_kwargs,
    train_teacher_run,
)
from projkd.experiments import teacher as teacher_module
from projkd.experiments.cli import _parser, spec_from_args
from projkd.experiments.demo import summarize
from projkd.models import DigitsCNN

from .conftest import DtypeProbe, fp16_cpu


def _milestones(params):
    (name, scheduler), *_ = params["callbacks"]
    assert name == "lr_scheduler"
    return scheduler.kwargs["milestones"]


def test_cifar100_recipe_is_the_reference():
    params = recipe("cifar100", "resnet8x4", 240)
    assert params["optimizer"] is torch.optim.SGD
    assert params["lr"] == 0.05
    assert params["optimizer__momentum"] == 0.9
    assert params["optimizer__weight_decay"] == 5e-4
    assert params["batch_size"] == 64
    assert _milestones(params) == [150, 180, 210]
    augment = params["train_transform"]
    assert isinstance(augment, RandomCropFlip) and augment.padding == 4
    black = tuple(-m / s for m, s in zip(CIFAR100_MEAN, CIFAR100_STD, strict=True))
    assert augment.fill == pytest.approx(black)


def test_recipe_scales_milestones_and_lowers_lr_for_small_students():
    assert _milestones(recipe("cifar100", "resnet8x4", 60)) == [38, 45, 52]
    assert recipe("cifar100", "mobilenetv2", 240)["lr"] == 0.01
    assert recipe("cifar100", "shufflenetv2", 240)["lr"] == 0.01
    assert _milestones(recipe("imagefolder", "torchvision:resnet18", 100)) == [
        30,
        60,
        90,
    ]


def _spec(*argv):
    return spec_from_args(_parser().parse_args(list(argv)))


def test_cli_defaults_to_the_recipe_length():
    weights = ["--teacher-weights", "t.pt"]
    spec = _spec("distill", "--dataset", "cifar100", *weights).resolve()
    assert spec.epochs == 240
    assert (spec.teacher_arch, spec.student_arch) == ("resnet32x4", "resnet8x4")
    assert _spec("train-teacher", "--dataset", "cifar100").resolve().epochs == 240
    assert _spec("distill", "--epochs", "7", *weights).resolve().epochs == 7
    assert spec.training_params("resnet8x4")["batch_size"] == 64
    wide = _spec("distill", "--dataset", "cifar100", "--batch-size", "256", *weights)
    params = wide.resolve().training_params("resnet8x4")
    assert params["batch_size"] == 256 and _milestones(params) == [150, 180, 210]


def test_speed_flags_map_to_estimator_parameters():
    weights = ["--teacher-weights", "t.pt"]
    # CPU: only what is asked for, so estimators without these parameters work
    assert speed_kwargs(_spec("distill", *weights)) == {}
    flags = ["--mixed-precision", "bf16", "--channels-last", "--compile"]
    assert speed_kwargs(_spec("distill", *weights, *flags)) == {
        "mixed_precision": "bf16",
        "channels_last": True,
        "compile": True,
    }
    # CUDA: the fast settings unless --no-fast; explicit flags win
    cuda = ["--device", "cuda", *weights]
    assert speed_kwargs(_spec("search", *cuda)) == FAST_SETTINGS
    fp16 = speed_kwargs(_spec("distill", *cuda, "--mixed-precision", "fp16"))
    assert fp16 == {**FAST_SETTINGS, "mixed_precision": "fp16"}
    assert speed_kwargs(_spec("distill", *cuda, "--no-fast")) == {}
    teacher = speed_kwargs(
        _spec("train-teacher", "--device", "cuda:1"), data_device=False
    )
    assert teacher == {k: v for k, v in FAST_SETTINGS.items() if k != "data_device"}
    with pytest.raises(ValueError, match="mixed_precision='fp8'"):
        RunSpec(mixed_precision="fp8")


def test_parallel_launch_selects_the_accelerated_distiller(monkeypatch):
    import accelerate

    from projkd.parallel import AcceleratedProjectorDistiller

    assert launched_world_size({"WORLD_SIZE": "2"}) == 2
    assert launched_world_size({}) == 1
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        launched_world_size({"WORLD_SIZE": "two"})

    made = []

    class FakeAccelerator:
        def __init__(self, **kwargs):
            made.append(kwargs)

    monkeypatch.setattr(accelerate, "Accelerator", FakeAccelerator)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    spec = RunSpec(device="cuda", mixed_precision="fp16")
    monkeypatch.setenv("WORLD_SIZE", "1")
    cls, kwargs = distiller_setup(spec)
    assert cls is ProjectorDistiller and kwargs["device"] == "cuda"
    assert not made
    monkeypatch.setenv("WORLD_SIZE", "4")
    cls, kwargs = distiller_setup(spec)
    assert cls is AcceleratedProjectorDistiller
    assert isinstance(kwargs["accelerator"], FakeAccelerator)
    assert kwargs["device"] is None and len(made) == 1
    # precision and compilation go to the accelerator, the rest to the estimator
    assert made[0]["mixed_precision"] == "fp16" and made[0]["cpu"] is False
    assert made[0]["dynamo_backend"] == "inductor"
    assert "mixed_precision" not in kwargs and "compile" not in kwargs
    assert kwargs["channels_last"] is True
    # asking for GPUs that are not there is an error, not a silent CPU run
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA device"):
        distiller_setup(spec)


def test_train_teacher_augments_cifar_with_crop_and_flip(monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(48, 3, 32, 32)).astype(np.float32)
    y = np.arange(48) % 4
    data = Data(X, y, X[:16], y[:16], 4, 3)
    monkeypatch.setattr(teacher_module, "load_data", lambda *a, **k: data)
    seen = []
    forward = RandomCropFlip.forward

    def recording(self, x):
        seen.append((tuple(x.shape), self.fill))
        return forward(self, x)

    monkeypatch.setattr(RandomCropFlip, "forward", recording)
    spec = RunSpec(
        dataset="cifar100",
        teacher_arch="resnet8",
        epochs=1,
        out=tmp_path,
        progress=False,
    )
    record = train_teacher_run(spec)
    black = tuple(-m / s for m, s in zip(CIFAR100_MEAN, CIFAR100_STD, strict=True))
    # every training batch, and only those (48 images in batches of 64)
    assert [shape for shape, _ in seen] == [(48, 3, 32, 32)]
    assert seen[0][1] == pytest.approx(black)
    assert record["best_epoch"] == 1 and record["best_test_acc"] == record["test_acc"]


@pytest.mark.parametrize(
    ("precision", "dtype"), [("bf16", torch.bfloat16), (None, torch.float32)]
)
def test_teacher_net_precision_and_memory_format(precision, dtype):
    X, y = load_digits()
    probe = DtypeProbe()
    net = TeacherNet(
        DigitsCNN(width=4),
        mixed_precision=precision,
        channels_last=True,
        max_epochs=1,
        train_split=None,
        verbose=0,
        callbacks=[probe],
    ).fit(X[:128], y[:128])
    assert set(probe.dtypes) == {dtype}  # the convolutions ran under autocast
    weight = next(p for p in net.module_.parameters() if p.ndim == 4)
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert net.predict_proba(X[:4]).dtype == np.float32
    assert np.isfinite(net.history[-1, "train_loss"])


class _GradientSizes(Callback):
    """The largest gradient entry seen by ``on_grad_computed``, per step."""

    def initialize(self):
        self.largest = []
        return self

    def on_grad_computed(self, net, named_parameters, **kwargs):
        grads = [p.grad.abs().max() for _, p in named_parameters if p.grad is not None]
        self.largest.append(float(max(grads)))


@fp16_cpu
def test_teacher_net_fp16_scales_the_loss():
    X, y = load_digits()
    probe = DtypeProbe()
    grads = _GradientSizes()
    net = TeacherNet(
        DigitsCNN(width=4),
        mixed_precision="fp16",
        max_epochs=1,
        train_split=None,
        verbose=0,
        callbacks=[probe, grads],
    ).fit(X[:128], y[:128])
    assert set(probe.dtypes) == {torch.float16}
    # callbacks (gradient clipping) see unscaled gradients, not 2**16 times them
    assert grads.largest and max(grads.largest) < 100
    assert net.grad_scaler_.get_scale() > 0 and np.isfinite(
        net.history[-1, "train_loss"]
    )


def _row(model, test_acc, gap=0.0, ece=0.1, cka=0.5):
    return dict(model=model, test_acc=test_acc, gap=gap, ece=ece, cka=cka)


def test_demo_summary_states_what_the_table_shows():
    rows = [
        _row("teacher", 0.99),
        _row("student alone", 0.90),
        _row("feature, no projector", 0.91, gap=0.05, ece=0.10, cka=0.60),
        _row("feature, 1 projector", 0.89, gap=0.07, ece=0.08, cka=0.65),
        _row("feature, 3 projectors", 0.95, gap=0.02, ece=0.04, cka=0.70),
    ]
    text = summarize(rows)
    assert "Best student: feature, 3 projectors (95.00% test accuracy" in text
    assert "1 projector vs no projector: test accuracy -2.00 points" in text
    assert "3 projectors vs no projector: test accuracy +4.00 points, gap -3.00" in text
    assert "ECE -6.00, CKA +0.100" in text


def test_only_the_main_process_logs(monkeypatch, tmp_path):
    from projkd.experiments.tracking import run_callbacks

    spec = RunSpec(tensorboard=str(tmp_path / "tb"), progress=True)
    monkeypatch.setenv("RANK", "1")
    names = [name for name, _ in run_callbacks(spec, None, None, distiller=True)]
    assert names == ["test_acc", "record_lr"]
    monkeypatch.setenv("RANK", "0")
    names = [name for name, _ in run_callbacks(spec, None, None, distiller=True)]
    assert names == ["test_acc", "record_lr", "tensorboard", "progress"]


class _FirstBatches(Callback):
    """The labels of the first training batch of every epoch."""

    def initialize(self):
        self.first_ = []
        return self

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        if training and len(self.first_) < len(net.history):
            self.first_.append(np.asarray(batch[1]).tolist())


@pytest.mark.parametrize("trainer", ["TeacherNet", "train_teacher"])
def test_teachers_train_on_shuffled_batches(trainer):
    # skorch does not shuffle by default: the teachers of train-teacher and
    # of projkd.teacher.train_teacher must (same batches every epoch otherwise)
    from projkd.experiments import TeacherNet
    from projkd.teacher import train_teacher

    X, y = load_digits()
    X, y = X[:256], y[:256]
    order = np.argsort(y, kind="stable")  # sorted: unshuffled batches show it
    X, y = X[order], y[order]
    record = _FirstBatches()
    params = dict(max_epochs=2, batch_size=32, callbacks=[record])
    torch.manual_seed(0)
    if trainer == "TeacherNet":
        TeacherNet(DigitsCNN(width=4), train_split=None, verbose=0, **params).fit(X, y)
    else:
        train_teacher(DigitsCNN(width=4), X, y, random_state=0, **params)
    first, second = record.first_
    assert first != y[:32].tolist() and first != second
