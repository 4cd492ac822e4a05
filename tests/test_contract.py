"""skorch's and scikit-learn's contract, item by item, on the distiller.

What skorch's hooks see is what skorch would give (the batch ``(X, y)``,
``y_pred`` the student's output, the per-batch history), and the
distillation state travels beside them (``distillation=`` in
``on_batch_end``). skorch's own suite runs in ``tests/skorch_suite``.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from skorch.callbacks import BatchScoring, Callback, EpochScoring, LRScheduler
from skorch.dataset import ValidSplit
from skorch.exceptions import NotInitializedError
from torch import nn

from projkd import DistillationOutput, ProjectorDistiller
from projkd.losses import DISTLoss, DKDLoss
from projkd.models import DigitsCNN
from projkd.training.compiling import FeatureTap

from .conftest import FAST


def distiller(teacher, **params):
    settings = dict(FAST, student__width=4, kd_weight=1.0, random_state=0)
    return ProjectorDistiller(teacher, DigitsCNN, **{**settings, **params})


class Spy(Callback):
    """Records what skorch's hooks receive."""

    def __init__(self):
        self.seen = []

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        X, y = batch
        self.seen.append(
            dict(
                training=training,
                X=type(X),
                y=type(y),
                y_pred=kwargs["y_pred"],
                distillation=kwargs.get("distillation"),
                loss=net.history[
                    -1, "batches", -1, f"{'train' if training else 'valid'}_loss"
                ],
            )
        )


# ------------------------------------------------------------ types at hooks
@pytest.mark.parametrize("cache", ["auto", False])
def test_epoch_scoring_with_and_without_caching(small_digits, teacher, cache):
    X, y = small_digits
    scores = [
        EpochScoring("f1_macro", name="f1", lower_is_better=False, use_caching=True),
        EpochScoring(
            "f1_macro", name="f1_fresh", lower_is_better=False, use_caching=False
        ),
        BatchScoring("accuracy", name="batch_acc", lower_is_better=False),
    ]
    spy = Spy()
    est = distiller(
        teacher,
        cache_teacher=cache,
        train_split=ValidSplit(5),
        callbacks=[*scores, ("spy", spy)],
    ).fit(X, y)
    f1, f1_fresh = est.history[-1, "f1"], est.history[-1, "f1_fresh"]
    assert 0 <= f1 <= 1 and f1 == pytest.approx(f1_fresh, abs=1e-6)
    assert np.isfinite(est.history[-1, "batch_acc"])
    # skorch's types at every hook; the distillation state beside them
    for seen in spy.seen:
        assert seen["X"] is torch.Tensor and seen["y"] is torch.Tensor
        assert type(seen["y_pred"]) is torch.Tensor and seen["y_pred"].shape[1] == 10
        assert isinstance(seen["distillation"], DistillationOutput)
        assert seen["distillation"].teacher_features.shape[1] == 32
        assert np.isfinite(seen["loss"])  # the batch's loss, read during the epoch


def test_get_loss_override_sees_the_logits_and_extends_the_loss(small_digits, teacher):
    seen = []

    class Net(ProjectorDistiller):
        def get_loss(self, y_pred, y_true, *args, **kwargs):
            seen.append(y_pred)
            return super().get_loss(y_pred, y_true, *args, **kwargs) + 0 * y_pred.sum()

    est = Net(teacher, DigitsCNN, student__width=4, **FAST).fit(*small_digits)
    assert seen and all(type(p) is torch.Tensor and p.shape[1] == 10 for p in seen)
    assert est.history[-1, "train_feat"] > 0  # the distillation terms still count


def test_a_batch_loss_reader_during_the_epoch(small_digits, teacher):
    class Reader(Callback):
        def on_batch_end(self, net, training=False, **kwargs):
            if training:
                self.losses.append(net.history[-1, "batches", -1, "train_loss"])

        def on_train_begin(self, net, **kwargs):
            self.losses = []

    reader = Reader()
    scheduler = LRScheduler(
        torch.optim.lr_scheduler.ReduceLROnPlateau,
        monitor="train_loss",
        step_every="batch",
        patience=0,
    )
    est = distiller(teacher, batch_size=32, callbacks=[reader, scheduler])
    est.fit(*small_digits)
    batches = est.history[:, "batches"]
    recorded = [row["train_loss"] for epoch in batches for row in epoch]
    assert reader.losses == pytest.approx(recorded)
    assert all(type(row) is dict for epoch in batches for row in epoch)


class MLP(nn.Module):
    """A student read through its forward (no forward_features)."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU())
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x, scale=1.0):
        logits = self.fc(self.body(x)) * scale
        return logits, logits.softmax(dim=1)


def test_fit_params_reach_the_students_forward(small_digits, teacher):
    calls = []

    class Scaled(MLP):
        def forward(self, x, scale=1.0):
            calls.append(scale)
            return super().forward(x, scale)

    X, y = small_digits
    ProjectorDistiller(teacher, Scaled, **FAST).fit(X, y, scale=2.0)
    assert calls.count(2.0) == FAST["max_epochs"] * -(-len(X) // FAST["batch_size"])


def test_forward_returns_every_output_of_a_student(small_digits, teacher):
    X, y = small_digits
    est = ProjectorDistiller(teacher, MLP, **FAST).fit(X, y)
    logits, proba = est.forward(X[:7])
    assert logits.shape == proba.shape == (7, 10)
    np.testing.assert_allclose(
        est.predict_proba(X[:7]), logits.softmax(dim=1).numpy(), rtol=1e-5
    )


def test_before_fit_prediction_raises_skorchs_not_initialized(small_digits, teacher):
    with pytest.raises(NotInitializedError):
        distiller(teacher).predict(small_digits[0])


def test_initialize_without_data_for_skorchs_restore_recipe(small_digits, tmp_path):
    teacher = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)
    )
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10))
    X, y = small_digits
    trained = ProjectorDistiller(teacher.eval(), student, **FAST).fit(X, y)
    trained.save_params(f_params=tmp_path / "params.pt")
    fresh = ProjectorDistiller(teacher.eval(), student, **FAST).initialize()
    fresh.load_params(f_params=tmp_path / "params.pt")
    np.testing.assert_allclose(fresh.predict_proba(X), trained.predict_proba(X))
    with pytest.raises(ValueError, match="does not declare"):  # a ReLU's width
        ProjectorDistiller(teacher.eval(), student, teacher_layer="2").initialize()


# --------------------------------------------------------- what stays behind
def test_predict_leaves_no_batch_inside_the_estimator(small_digits, teacher):
    X, y = small_digits
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10))
    est = ProjectorDistiller(teacher, student, **FAST).fit(X, y)
    before = len(pickle.dumps(est))
    est.predict(X)
    taps = [
        hook
        for module in est.module_.modules()
        for hook in module._forward_hooks.values()
        if isinstance(hook, FeatureTap)
    ]
    assert taps and all(tap.value is None for tap in taps)
    assert len(pickle.dumps(est)) == before


@pytest.mark.parametrize("data_device", ["auto", "cpu"])
def test_the_teacher_cache_keeps_no_batch_after_its_step(
    small_digits, teacher, data_device
):
    """A cached batch's teacher rows go with the batch: none accumulate over
    epochs (they once did, each entry keeping its own key alive)."""
    from projkd.training.batching import PREPARED

    X, y = small_digits
    before = len(PREPARED)
    est = distiller(teacher, cache_teacher=True, max_epochs=3)
    est.set_params(data_device=data_device).fit(X, y)
    assert len(PREPARED) == before


def test_a_value_kept_beside_a_tensor_may_not_hold_it():
    from projkd.training.batching import TensorMap

    beside, x = TensorMap(), torch.zeros(2)
    with pytest.raises(ValueError, match="must not hold it"):
        beside.put(x, (x, 1))
    beside.put(x, (None, 1))
    beside.discard(x)
    assert beside.get(x) is None and len(beside) == 0


def test_a_model_pickled_on_a_gpu_routes_its_teacher_through_map_location(
    small_digits, teacher
):
    est = distiller(teacher).fit(*small_digits)
    state = est.__getstate__()
    # skorch unpickles these with torch.load(map_location=...)
    for name in ("teacher", "teacher_", "_sample_input_", "module_"):
        assert name not in state, name


# ------------------------------------------------------------ what users bring
def test_an_nn_module_logit_loss_and_a_loss_class(small_digits, teacher):
    class ModuleKD(nn.Module):
        def forward(self, student, teacher, y, temperature=4.0):
            return nn.functional.mse_loss(student, teacher), {}

    X, y = small_digits
    est = distiller(teacher, logit_loss=ModuleKD()).fit(X, y)
    assert est.history[-1, "train_kd"] > 0
    est.set_params(logit_loss=ModuleKD())  # a parameter, not a skorch component
    dkd = distiller(teacher, logit_loss=DKDLoss, logit_loss__beta=2.0).fit(X, y)
    assert dkd.logit_loss_.loss == DKDLoss(beta=2.0)
    assert (
        distiller(teacher, logit_loss="dkd", logit_loss__beta=6.0).logit_loss == "dkd"
    )


def test_a_mistyped_logit_loss_is_refused_before_the_first_batch(small_digits, teacher):
    steps = []

    class Count(Callback):
        def on_batch_begin(self, net, **kwargs):
            steps.append(1)

    wrong_arity = distiller(teacher, logit_loss=lambda s, t: (s.sum(), {}))
    with pytest.raises(ValueError, match="logit_loss=.*failed on a batch"):
        wrong_arity.set_params(callbacks=[Count()]).fit(*small_digits)
    wrong_return = distiller(teacher, logit_loss=lambda s, t, y: s.sum())
    with pytest.raises(ValueError, match="returns \\(loss, terms\\)"):
        wrong_return.set_params(callbacks=[Count()]).fit(*small_digits)
    assert steps == []


@pytest.mark.parametrize(
    "params",
    [{"logit_loss": DISTLoss()}, {"projector": "mlp"}],
    ids=["dist", "mlp"],
)
def test_a_last_batch_of_one_sample_is_dropped_once_said(small_digits, teacher, params):
    X, y = small_digits
    X, y = X[:65], y[:65]  # 64 + a last batch of 1
    est = distiller(teacher, batch_size=32, **params)
    with pytest.warns(UserWarning, match="hold 1 of 65 samples") as record:
        est.fit(X, y)
    assert len([w for w in record if "hold 1 of" in str(w.message)]) == 1
    assert [row["train_batch_size"] for row in est.history[-1, "batches"]] == [32, 32]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to say with drop_last
        est.set_params(iterator_train__drop_last=True).fit(X, y)


def test_a_torchvision_style_dataset_takes_its_targets(small_digits, teacher):
    class Digits(torch.utils.data.Dataset):
        def __init__(self, X, y):
            self.X, self.targets = torch.as_tensor(X), list(y)

        def __len__(self):
            return len(self.X)

        def __getitem__(self, i):
            return self.X[i], self.targets[i]

    X, y = small_digits
    est = ProjectorDistiller(
        teacher, DigitsCNN, student__width=4, max_epochs=1, verbose=0
    )
    est.fit(Digits(X, y))  # the default stratified train_split uses its targets
    assert list(est.classes_) == list(range(10))
    assert np.isfinite(est.history[-1, "valid_acc"])

    class Unlabelled(torch.utils.data.Dataset):
        __len__ = Digits.__len__

        def __init__(self, X, y):
            self.X, self.y_ = torch.as_tensor(X), list(y)

        def __getitem__(self, i):
            return self.X[i], self.y_[i]

    with pytest.raises(ValueError, match="stratifies by them: pass y"):
        est.fit(Unlabelled(X, y))


def test_a_users_dataset_subclass_is_used_as_given(small_digits, teacher):
    from skorch.dataset import Dataset

    seen = set()

    class Mine(Dataset):
        def __getitem__(self, i):
            seen.add(type(self))
            return super().__getitem__(i)

    X, y = small_digits
    est = distiller(teacher, train_split=lambda ds, y: (ds, Mine(X[:50], y[:50])))
    est.fit(Mine(X, y), None)
    assert seen == {Mine}


def test_an_accelerator_class_is_refused_before_training(small_digits, teacher):
    from accelerate import Accelerator

    from projkd.parallel import AcceleratedProjectorDistiller

    est = AcceleratedProjectorDistiller(
        teacher, DigitsCNN, accelerator=Accelerator, student__width=4, **FAST
    )
    with pytest.raises(ValueError, match="accelerator=Accelerator is a class"):
        est.fit(*small_digits)
    assert not hasattr(est, "module_")


def test_gradient_accumulation_steps_by_the_mean_of_the_micro_batches():
    from accelerate import Accelerator

    from projkd.parallel import AcceleratedProjectorDistiller

    torch.manual_seed(0)
    X = torch.randn(8, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    teacher = nn.Linear(4, 3).eval()
    student = nn.Linear(4, 3)
    start = {k: v.clone() for k, v in student.state_dict().items()}
    est = AcceleratedProjectorDistiller(
        teacher,
        student,
        accelerator=Accelerator(cpu=True, gradient_accumulation_steps=2),
        feature_weight=0.0,
        optimizer=torch.optim.SGD,
        lr=1.0,
        batch_size=4,
        max_epochs=1,
        train_split=None,
        verbose=0,
    ).fit(X, y)
    # by hand: one SGD step on the mean of the two micro-batches' gradients
    reference = nn.Linear(4, 3)
    reference.load_state_dict(start)
    loss = sum(
        nn.functional.cross_entropy(reference(X[i : i + 4]), y[i : i + 4])
        for i in (0, 4)
    )
    (loss / 2).backward()
    with torch.no_grad():
        for p in reference.parameters():
            p -= p.grad
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(est.module_.state_dict()[name], value)


# ------------------------------------------------------------------ the fit
def test_fit_checks_and_encodes_the_data_once(small_digits, teacher, monkeypatch):
    import projkd.distiller as module

    calls = []
    check = module.check_fit_data
    monkeypatch.setattr(
        module, "check_fit_data", lambda *a, **k: calls.append(1) or check(*a, **k)
    )
    distiller(teacher).fit(*small_digits)
    assert calls == [1]


def test_the_training_graph_of_each_loss_option_traces_its_own_code(teacher):
    from projkd.training.graphs import TrainingGraph

    def structure(beta):
        est = distiller(teacher, logit_loss="dkd", logit_loss__beta=beta, compile=True)
        est.resolve_losses()
        parts = dict(
            student=nn.Linear(2, 2),
            layer=None,
            projectors=nn.Identity(),
            logit_projector=nn.Identity(),
            ce_loss=nn.CrossEntropyLoss(),
            logit_loss=est.logit_loss_,
            log_probabilities=False,
            temperature=4.0,
            active=("ce", "kd"),
            device="cpu",
            mixed_precision=None,
            compile_kwargs={},
        )
        return TrainingGraph(**parts).structure()

    assert structure(2.0) != structure(6.0)
    assert structure(2.0) == structure(2.0)


def test_features_of_either_network_honour_the_speed_settings(small_digits, teacher):
    X, y = small_digits
    est = distiller(teacher, mixed_precision="bf16", channels_last=True).fit(X, y)
    seen = []
    hook = est.module_.features[0].register_forward_hook(
        lambda module, args, out: seen.append(
            (out.dtype, args[0].is_contiguous(memory_format=torch.channels_last))
        )
    )
    features = est.transform(X[:5])
    hook.remove()
    assert features.dtype == np.float32 and seen == [(torch.bfloat16, True)]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        x = torch.as_tensor(X[:5]).contiguous(memory_format=torch.channels_last)
        expected = est.module_.forward_features(x).float()
    np.testing.assert_allclose(features, expected.numpy().reshape(5, -1), rtol=1e-5)
    assert est.transform_teacher(X[:5]).dtype == np.float32
