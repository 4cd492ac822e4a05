import copy

import numpy as np
import pytest
import torch

from projkd.models import DigitsCNN

accelerate = pytest.importorskip("accelerate")


def test_one_process_fit_through_accelerate(small_digits, capsys):
    from projkd.parallel import AcceleratedProjectorDistiller

    X, y = small_digits
    teacher = DigitsCNN(width=8, n_features=32).eval()
    state = copy.deepcopy(teacher.state_dict())
    est = AcceleratedProjectorDistiller(
        teacher,
        DigitsCNN,
        student__width=4,
        student__n_features=16,
        accelerator=accelerate.Accelerator(cpu=True),
        max_epochs=3,
        optimizer=torch.optim.Adam,
        lr=3e-3,
        batch_size=32,
        train_split=None,
        verbose=0,
        random_state=0,
    ).fit(X, y)
    losses = est.history[:, "train_loss"]
    assert losses[-1] < losses[0]
    assert capsys.readouterr().out == ""  # verbose=0 is quiet
    assert est.teacher_ is teacher  # never prepared, wrapped or moved
    for key, value in state.items():
        assert torch.equal(teacher.state_dict()[key], value)
    proba = est.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


def make_accelerated(**params):
    from projkd.parallel import AcceleratedProjectorDistiller

    kwargs = dict(
        student__width=4,
        student__n_features=16,
        max_epochs=1,
        batch_size=64,
        train_split=None,
        verbose=0,
        random_state=0,
    )
    kwargs.update(params)
    kwargs.setdefault("accelerator", accelerate.Accelerator(cpu=True))
    return AcceleratedProjectorDistiller(
        DigitsCNN(width=8, n_features=32).eval(), DigitsCNN, **kwargs
    )


def test_only_trainable_modules_are_prepared(small_digits):
    from projkd.parallel.mixin import FeatureModule

    X, y = small_digits
    # no projector and an identity logit projector: modules without parameters
    est = make_accelerated(n_projectors=0, student__n_features=32).fit(X, y)
    est._initialize_accelerator()  # as at the start of training
    assert isinstance(est.module_, FeatureModule)
    assert not isinstance(est.projectors_, FeatureModule)
    assert isinstance(est.logit_projector_, torch.nn.Identity)
    assert isinstance(est.criterion_, torch.nn.CrossEntropyLoss)
    est._unwrap_accelerator()
    assert isinstance(est.module_, DigitsCNN)

    est = make_accelerated(logit_projector=True, kd_weight=1.0)
    est.fit(X, y)._initialize_accelerator()
    assert isinstance(est.projectors_, FeatureModule)
    assert isinstance(est.logit_projector_, FeatureModule)


@pytest.mark.filterwarnings("ignore:Setting self.device")  # skorch's, at unpickling
def test_refit_and_partial_fit_train_again_then_unwrap(small_digits):
    import pickle

    X, y = small_digits
    est = make_accelerated().fit(X, y)
    before = copy.deepcopy(est.module_.state_dict())
    est.partial_fit(X, y)
    assert isinstance(est.module_, DigitsCNN)  # unwrapped after each fit
    assert len(est.history) == 2
    changed = [
        not torch.equal(value, est.module_.state_dict()[key])
        for key, value in before.items()
    ]
    assert any(changed)
    clone = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(clone.predict_proba(X), est.predict_proba(X))


def test_make_distiller_picks_the_estimator(monkeypatch):
    from projkd import ProjectorDistiller
    from projkd.parallel import AcceleratedProjectorDistiller, make_distiller

    teacher = DigitsCNN(width=8).eval()
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    plain = make_distiller(teacher, DigitsCNN, device="cpu", batch_size=16)
    assert type(plain) is ProjectorDistiller and plain.device == "cpu"
    accelerated = make_distiller(
        teacher,
        DigitsCNN,
        device="cpu",
        batch_size=16,
        accelerator=accelerate.Accelerator(cpu=True),
    )
    assert isinstance(accelerated, AcceleratedProjectorDistiller)
    assert accelerated.device is None and accelerated.batch_size == 16


@pytest.mark.parametrize(
    ("params", "match"),
    [
        (dict(nonfinite_loss="skip"), "nonfinite_loss='skip'"),
        (dict(sync_batchnorm=True), "sync_batchnorm=True needs GPUs"),
    ],
)
def test_settings_that_cannot_work_in_several_processes_are_refused(
    small_digits, monkeypatch, params, match
):
    # one process standing in for one of two: only the count is consulted
    monkeypatch.setattr(
        accelerate.Accelerator, "num_processes", property(lambda self: 2)
    )
    est = make_accelerated(**params)
    with pytest.raises(ValueError, match=match):
        est.fit(*small_digits)
    assert not hasattr(est, "module_")  # refused before anything was built


def test_a_shared_accelerator_lets_finished_fits_go(small_digits):
    # projkd reproduce shares one accelerator among all its runs: a finished
    # fit must not stay referenced by it (networks, gradients, optimizer state)
    from torch.utils.data import TensorDataset

    X, y = small_digits
    shared = accelerate.Accelerator(cpu=True)
    dataset = TensorDataset(torch.as_tensor(X), torch.as_tensor(y).long())
    for data, target in ((X, y), (dataset, None)):  # sliced arrays, DataLoader
        est = make_accelerated(accelerator=shared, max_epochs=2)
        est.fit(data, target)
        assert isinstance(est.module_, DigitsCNN)
        assert shared._models == [] and shared._optimizers == []
        assert shared._dataloaders == []


def test_its_parameter_constraints_extend_the_distillers(small_digits):
    from accelerate import Accelerator

    from projkd import ProjectorDistiller
    from projkd.parallel import AcceleratedProjectorDistiller

    constraints = AcceleratedProjectorDistiller._parameter_constraints
    assert ProjectorDistiller._parameter_constraints.items() <= constraints.items()
    est = AcceleratedProjectorDistiller(
        DigitsCNN(width=8).eval(),
        DigitsCNN,
        accelerator=Accelerator(cpu=True),
        sync_batchnorm="yes",
        max_epochs=1,
        verbose=0,
    )
    with pytest.raises(ValueError, match="'sync_batchnorm' parameter"):
        est.fit(*small_digits)
    assert not est.initialized_  # refused before anything was built
