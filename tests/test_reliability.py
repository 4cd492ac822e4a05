"""Faults survived: non-finite losses, crashes, interrupts, unsafe files."""

import copy
import pickle

import joblib
import numpy as np
import pytest
import torch
from sklearn.model_selection import GridSearchCV
from skorch.callbacks import Callback

from projkd import NonFiniteLossError, ProjectorDistiller
from projkd.callbacks import ResumableCheckpoint
from projkd.models import DigitsCNN

from .conftest import FAST


def make(teacher, **params):
    kwargs = dict(FAST, student=DigitsCNN, student__width=4, student__n_features=16)
    kwargs.update({"random_state": 0, "batch_size": 50, **params})
    return ProjectorDistiller(teacher, **kwargs)


class Poison(Callback):
    """Turns the student's classifier weights to NaN before a given batch."""

    def __init__(self, epoch=2, batch=3):
        self.epoch = epoch
        self.batch = batch

    def on_batch_begin(self, net, training=False, **kwargs):
        batches = len(net.history[-1]["batches"])
        if training and len(net.history) == self.epoch and batches == self.batch:
            self.saved_ = copy.deepcopy(dict(net.module_.named_parameters()))
            with torch.no_grad():
                net.module_.fc.bias.fill_(float("nan"))


def test_a_nonfinite_loss_stops_training_naming_epoch_batch_and_term(
    teacher, small_digits
):
    X, y = small_digits
    poison = Poison(epoch=2, batch=3)
    est = make(teacher, max_epochs=4, callbacks=[poison])
    # kd_weight is 0: the KD term is switched off, so only CE can be blamed
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, batch 3 \(ce = nan\)"):
        est.fit(X, y)
    # the weights are the last finite ones (plus the poison): no step used the NaN
    state = dict(est.module_.named_parameters())
    for key, value in poison.saved_.items():
        if key != "fc.bias":
            assert torch.equal(state[key], value), key
    with torch.no_grad():
        est.module_.fc.bias.copy_(poison.saved_["fc.bias"])
    assert np.isfinite(est.predict_proba(X)).all()  # still usable


class PoisonOnce(Poison):
    """Poisons one batch, records the weights after it, then heals the model."""

    def on_batch_end(self, net, training=False, **kwargs):
        if hasattr(self, "saved_") and not hasattr(self, "after_"):
            self.after_ = copy.deepcopy(dict(net.module_.named_parameters()))
            with torch.no_grad():
                net.module_.fc.bias.copy_(self.saved_["fc.bias"])


def test_skip_mode_skips_nonfinite_batches_and_warns(teacher, small_digits):
    poison = PoisonOnce(epoch=1, batch=2)
    est = make(teacher, nonfinite_loss="skip", max_epochs=2, callbacks=[poison])
    with pytest.warns(
        RuntimeWarning, match="Skipped a training batch .* epoch 1, batch 2"
    ):
        est.fit(*small_digits)
    for key, value in poison.saved_.items():  # the skipped batch changed nothing
        if key != "fc.bias":
            assert torch.equal(poison.after_[key], value), key
    assert all(torch.isfinite(p).all() for p in est.module_.parameters())
    assert np.isfinite(est.history[-1, "train_loss"])


class Crash(Callback):
    def __init__(self, at_epoch):
        self.at_epoch = at_epoch

    def on_epoch_begin(self, net, **kwargs):
        if len(net.history) == self.at_epoch:
            raise RuntimeError("simulated crash")


def test_resume_after_a_crash_equals_the_uninterrupted_run(
    tmp_path, teacher, small_digits
):
    X, y = small_digits
    full = make(teacher, max_epochs=5).fit(X, y)

    crashing = make(
        teacher,
        max_epochs=5,
        callbacks=[ResumableCheckpoint(dirname=str(tmp_path)), Crash(at_epoch=4)],
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.fit(X, y)
    resumed = make(
        teacher, max_epochs=5, callbacks=[ResumableCheckpoint(dirname=str(tmp_path))]
    ).fit(X, y)
    assert len(resumed.history) == 5
    for key, value in full.module_.state_dict().items():
        assert torch.equal(resumed.module_.state_dict()[key], value), key
    for key, value in full.projectors_.state_dict().items():
        assert torch.equal(resumed.projectors_.state_dict()[key], value), key


def test_parallel_fits_checkpoint_into_separate_folders(
    tmp_path, teacher, small_digits
):
    est = make(teacher, callbacks=[ResumableCheckpoint(dirname=str(tmp_path))])
    GridSearchCV(est, {"n_projectors": [1, 2]}, cv=2, n_jobs=2).fit(*small_digits)
    runs = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(runs) == 2 * 2 + 1  # one per candidate and fold, and the refit
    assert all((run / "history.json").exists() for run in runs)


class Interrupt(Callback):
    def on_batch_end(self, net, training=False, **kwargs):
        if training and len(net.history[-1]["batches"]) == 2:
            raise KeyboardInterrupt


def test_keyboard_interrupt_mid_epoch_leaves_a_usable_estimator(teacher, small_digits):
    X, y = small_digits
    est = make(teacher, max_epochs=3, callbacks=[Interrupt()]).fit(X, y)
    assert len(est.history) == 1
    assert est.predict(X).shape == (len(X),)
    assert pickle.loads(pickle.dumps(est)).predict(X).shape == (len(X),)


def test_save_params_and_load_params_cover_student_and_projectors(
    tmp_path, teacher, small_digits
):
    X, y = small_digits
    est = make(teacher).fit(X, y)
    files = {name: str(tmp_path / f"{name}.pt") for name in ("params", "projectors")}
    est.save_params(f_params=files["params"], f_projectors=files["projectors"])
    other = make(teacher, random_state=1).fit(X, y)
    other.load_params(f_params=files["params"], f_projectors=files["projectors"])
    np.testing.assert_array_equal(other.predict_proba(X), est.predict_proba(X))
    for key, value in est.projectors_.state_dict().items():
        assert torch.equal(other.projectors_.state_dict()[key], value)


def test_joblib_round_trip_predicts_the_same(tmp_path, teacher, small_digits):
    X, y = small_digits
    est = make(teacher).fit(X, y)
    joblib.dump(est, tmp_path / "est.joblib")
    restored = joblib.load(tmp_path / "est.joblib")
    np.testing.assert_array_equal(restored.predict_proba(X), est.predict_proba(X))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_load_params_refuses_a_checkpoint_carrying_code(
    tmp_path, teacher, small_digits
):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "params.pt"
    with open(path, "wb") as f:
        pickle.dump({"fc.weight": Evil()}, f)
    est = make(teacher).fit(*small_digits)
    with pytest.raises(pickle.UnpicklingError):
        est.load_params(f_params=str(path))
    assert not marker.exists()
