import copy
import functools
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.model_selection import StratifiedKFold
from skorch.callbacks import Callback
from skorch.dataset import ValidSplit
from torch import nn
from torch.utils.data import TensorDataset

from projkd import ProjectorDistiller
from projkd.models import DigitsCNN, get_model

from .conftest import FAST


def make(teacher, **params):
    kwargs = dict(FAST, student=DigitsCNN, student__width=4, student__n_features=16)
    kwargs.update(params)
    return ProjectorDistiller(teacher, **kwargs)


def snapshot(module):
    return {
        "state": copy.deepcopy(module.state_dict()),
        "training": [m.training for m in module.modules()],
        "requires_grad": [p.requires_grad for p in module.parameters()],
        "device": [p.device for p in module.parameters()],
    }


def assert_untouched(module, before):
    after = snapshot(module)
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["device"] == before["device"]
    assert before["state"].keys() == after["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_teacher_comes_out_of_fit_bit_identical(small_digits, mode):
    teacher = DigitsCNN(width=8, n_features=32).train(mode == "train")
    before = snapshot(teacher)
    est = make(teacher, max_epochs=2).fit(*small_digits)
    est.predict(small_digits[0])
    assert est.teacher is teacher
    assert_untouched(teacher, before)
    # the frozen copy (or the shared object) still has the original BN statistics
    for key, value in before["state"].items():
        assert torch.equal(est.teacher_.state_dict()[key], value), key
    assert not any(m.training for m in est.teacher_.modules())


def test_eval_mode_teacher_is_shared_not_copied(small_digits, teacher):
    est = make(teacher).fit(*small_digits)
    assert est.teacher_ is teacher


def test_teacher_is_not_in_the_optimizer(small_digits, teacher):
    est = make(teacher, logit_projector=True).fit(*small_digits)
    optimized = {id(p) for g in est.optimizer_.param_groups for p in g["params"]}
    expected = {
        id(p)
        for m in (est.module_, est.projectors_, est.logit_projector_)
        for p in m.parameters()
    }
    assert optimized == expected
    assert not optimized & {id(p) for p in teacher.parameters()}


def test_user_student_instance_is_not_trained(small_digits, teacher):
    student = DigitsCNN(width=4, n_features=16)
    before = snapshot(student)
    est = ProjectorDistiller(teacher, student, **FAST).fit(*small_digits)
    assert_untouched(student, before)
    assert est.module_ is not student


def test_n_projectors_zero_with_unequal_widths_fails_before_training(
    small_digits, teacher
):
    est = make(teacher, n_projectors=0, student__n_features=16)
    with pytest.raises(ValueError, match=r"width 16 and the teacher's 32"):
        est.fit(*small_digits)
    assert not hasattr(est, "module_") or not est.history


@pytest.mark.parametrize("k", [0, 1, 3])
def test_n_projectors_builds_that_many(small_digits, teacher, k):
    est = make(teacher, n_projectors=k, student__n_features=32).fit(*small_digits)
    assert len(est.projectors_) == k
    n_fused = 0 if est.projectors_.fused is None else len(est.projectors_.fused.weight)
    assert n_fused == k  # "linear" projectors are fused into one GEMM
    assert (est.n_student_features_, est.n_teacher_features_) == (32, 32)


@pytest.mark.parametrize(
    "encode",
    [lambda y: np.array([f"digit-{d}" for d in y]), lambda y: 10 * y + 3],
    ids=["strings", "non-contiguous-ints"],
)
def test_labels_round_trip_and_history_accuracy_is_right(small_digits, teacher, encode):
    X, y = small_digits
    labels = encode(y)
    est = make(
        teacher,
        train_split=ValidSplit(5, stratified=True),
        max_epochs=5,
        optimizer=torch.optim.Adam,
        lr=3e-3,
        batch_size=32,
        feature_weight=1.0,
    )
    est.fit(X, labels)
    assert list(est.classes_) == sorted(set(labels.tolist()))
    predicted = est.predict(X)
    assert set(predicted) <= set(labels)
    # the history's accuracies compare like with like: recompute them
    _, valid_idx = next(StratifiedKFold(5).split(X, labels))  # what ValidSplit uses
    valid_acc = est.history[-1, "valid_acc"]
    assert valid_acc > 0.3  # ~0 if decoded predictions met encoded targets
    assert valid_acc == pytest.approx(est.score(X[valid_idx], labels[valid_idx]))
    assert est.history[-1, "train_acc"] > 0.3


def test_predict_proba_is_a_distribution_and_predict_its_argmax(small_digits, teacher):
    X, y = small_digits
    est = make(teacher).fit(X, y)
    proba = est.predict_proba(X)
    assert proba.shape == (len(X), 10)
    assert (proba >= 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(est.predict(X), est.classes_[proba.argmax(axis=1)])


def test_prediction_never_runs_the_teacher(small_digits, teacher):
    est = make(teacher).fit(*small_digits)
    calls = []
    handle = est.teacher_.register_forward_hook(lambda *args: calls.append(1))
    try:
        est.predict_proba(small_digits[0])
        est.score(*small_digits)
        est.transform(small_digits[0])
    finally:
        handle.remove()
    assert calls == []


def _lr0_distiller(n, **params):
    """Two MLPs and ``n`` samples of 3 classes, fitted with lr=0: the weights
    stay at their initial values, so every recorded term is a function of
    them that :func:`_hand_objective` recomputes."""
    torch.manual_seed(0)
    X = torch.randn(n, 6)
    y = torch.arange(n) % 3
    teacher = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    student = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    est = ProjectorDistiller(
        teacher,
        student,
        n_projectors=2,
        kd_weight=0.5,
        lr=0.0,
        verbose=0,
        random_state=0,
        **params,
    ).fit(X, y)
    return est, teacher, X, y


def _hand_objective(est, teacher, X, y):
    """CE + 0.5 KD (T = 4) + 25 (1 - cosine) and accuracy, by hand."""
    with torch.no_grad():
        logits = est.module_(X)
        s, t = est.module_[:2](X), teacher[:2](X)
        ce = F.cross_entropy(logits, y)
        kd = 16 * F.kl_div(
            F.log_softmax(logits / 4, 1),
            F.softmax(teacher(X) / 4, 1),
            reduction="batchmean",
        )
        feat = (1 - F.cosine_similarity(est.projectors_(s), t)).mean()
        acc = (logits.argmax(1) == y).float().mean()
    return {
        "ce": float(ce),
        "kd": float(kd),
        "feat": float(feat),
        "acc": float(acc),
        "loss": float(ce + 0.5 * kd + 25 * feat),
    }


def test_history_terms_are_the_epoch_means_of_the_objective():
    """Each epoch's recorded terms are the sample means of the objective over
    the training part, and ``valid_*`` over the validation part
    (ValidSplit(5): the first fifth), across several uneven batches."""
    from sklearn.model_selection import KFold

    est, teacher, X, y = _lr0_distiller(
        100,
        max_epochs=2,
        batch_size=32,  # 80 training samples: batches of 32, 32 and 16
        train_split=ValidSplit(5),
    )
    train_idx, valid_idx = next(KFold(5).split(X))
    train = _hand_objective(est, teacher, X[train_idx], y[train_idx])
    valid = _hand_objective(est, teacher, X[valid_idx], y[valid_idx])
    assert train["acc"] != valid["acc"]  # the two parts are told apart
    for epoch in est.history:
        for term in ("ce", "kd", "feat", "acc", "loss"):
            assert epoch[f"train_{term}"] == pytest.approx(train[term], rel=1e-5), term
        assert epoch["valid_loss"] == pytest.approx(valid["loss"], rel=1e-5)
        assert epoch["valid_acc"] == pytest.approx(valid["acc"], rel=1e-6)


def test_recorded_terms_equal_the_objective_on_the_data():
    """With one full batch, the recorded terms are the objective itself."""
    est, teacher, X, y = _lr0_distiller(
        40,
        max_epochs=1,
        batch_size=40,
        train_split=None,
        iterator_train__shuffle=False,
    )
    expected = _hand_objective(est, teacher, X, y)
    h = est.history[-1]
    assert h["train_ce"] == pytest.approx(expected["ce"], rel=1e-5)
    assert h["train_kd"] == pytest.approx(expected["kd"], rel=1e-4)
    assert h["train_feat"] == pytest.approx(expected["feat"], rel=1e-5)
    assert h["train_loss"] == pytest.approx(expected["loss"], rel=1e-5)


def test_logit_projector_is_trained_by_the_kd_term(small_digits, teacher):
    est = make(teacher, logit_projector=True, kd_weight=1.0).fit(*small_digits)
    assert isinstance(est.logit_projector_, nn.Linear)
    assert est.logit_projector_.weight.shape == (10, 10)
    assert est.logit_projector_.weight.grad is not None
    assert est.logit_projector_.weight.grad.abs().sum() > 0


def test_same_random_state_gives_bit_identical_predictions(small_digits, teacher):
    X, y = small_digits
    first = make(teacher, random_state=7, train_split=ValidSplit(5)).fit(X, y)
    second = make(teacher, random_state=7, train_split=ValidSplit(5)).fit(X, y)
    other = make(teacher, random_state=8, train_split=ValidSplit(5)).fit(X, y)
    np.testing.assert_array_equal(first.predict_proba(X), second.predict_proba(X))
    assert not np.array_equal(first.predict_proba(X), other.predict_proba(X))


def test_random_state_leaves_the_global_generator_alone(small_digits, teacher):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make(teacher, random_state=0).fit(*small_digits)
    torch.testing.assert_close(torch.rand(3), expected)


def _weights(est):
    return {
        name: value
        for module in (est.module_, est.projectors_)
        for name, value in module.state_dict().items()
    }


@pytest.mark.parametrize(
    "student",
    [DigitsCNN, functools.partial(get_model, "digits_student")],
    ids=["class", "registry-factory"],
)
def test_students_built_by_the_estimator_follow_random_state(
    small_digits, teacher, student
):
    """Built inside the seeded fit: whatever the global generator's state."""
    runs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        est = ProjectorDistiller(
            teacher, student, student__n_features=16, **FAST, random_state=5
        )
        runs.append(_weights(est.fit(*small_digits)))
    assert runs[0].keys() == runs[1].keys()
    for name, value in runs[0].items():
        assert torch.equal(value, runs[1][name]), name
    assert runs[0]["fc.weight"].shape == (10, 16)  # student__* reached it


def test_a_factory_gets_the_teachers_number_of_classes(small_digits, teacher):
    def build(num_classes=100, width=2):
        return DigitsCNN(width=width, n_features=8, num_classes=num_classes)

    est = ProjectorDistiller(teacher, build, student__width=3, **FAST)
    est.fit(*small_digits)
    assert est.module_.fc.out_features == 10
    assert est.module_.features[0].out_channels == 3


def test_a_factory_must_build_a_module(small_digits, teacher):
    est = ProjectorDistiller(teacher, lambda num_classes: "resnet8", **FAST)
    with pytest.raises(TypeError, match=r"student=.*returned a str, not a torch"):
        est.fit(*small_digits)


def test_a_first_partial_fit_builds_its_networks_under_random_state(
    small_digits, teacher
):
    runs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        est = make(teacher, max_epochs=1, random_state=5)
        runs.append(_weights(est.partial_fit(*small_digits)))
    for name, value in runs[0].items():
        assert torch.equal(value, runs[1][name]), name


def test_transform_gives_student_and_teacher_features(small_digits, teacher):
    X, y = small_digits
    est = make(teacher).fit(X, y)
    student_features = est.transform(X)
    teacher_features = est.transform_teacher(X)
    assert student_features.shape == (len(X), 16)
    with torch.no_grad():
        expected = teacher.forward_features(torch.as_tensor(X)).numpy()
    np.testing.assert_allclose(teacher_features, expected, rtol=1e-5, atol=1e-6)


def test_pickled_estimator_predicts_the_same(small_digits, teacher):
    X, y = small_digits
    est = make(teacher).fit(X, y)
    restored = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(restored.predict_proba(X), est.predict_proba(X))
    np.testing.assert_array_equal(
        restored.transform_teacher(X), est.transform_teacher(X)
    )


def test_torch_dataset_input_uses_class_indices(small_digits, teacher):
    X, y = small_digits
    dataset = TensorDataset(torch.as_tensor(X), torch.as_tensor(y))
    est = make(teacher).fit(dataset, None)
    np.testing.assert_array_equal(est.classes_, np.arange(10))
    assert est.predict(dataset).shape == (len(X),)


def test_partial_fit_continues_training(small_digits, teacher):
    est = make(teacher, max_epochs=1).fit(*small_digits)
    weights = copy.deepcopy(est.module_.state_dict())
    est.partial_fit(*small_digits)
    assert len(est.history) == 2
    assert any(
        not torch.equal(v, est.module_.state_dict()[k]) for k, v in weights.items()
    )


def test_set_student_params_on_a_fitted_estimator_rebuilds_the_student(
    small_digits, teacher
):
    est = make(teacher).fit(*small_digits)
    est.set_params(student__n_features=8)
    assert est.module_.num_features == 8
    assert est.projectors_.in_features == 8


@pytest.mark.parametrize(
    "X_change, y_change, message",
    [
        (
            lambda X: np.where(np.arange(X.size).reshape(X.shape) == 5, np.nan, X),
            None,
            "NaN",
        ),
        (None, lambda y: y[:-1], "300 samples but y has 299"),
        (
            None,
            lambda y: np.where(np.arange(len(y)) == 0, 10, y),
            "teacher has 10 outputs but there are 11",
        ),
        (None, lambda y: np.zeros_like(y), "only one class"),
    ],
    ids=["nan", "length", "more-classes-than-teacher", "one-class"],
)
def test_bad_input_is_refused_before_training(
    small_digits, teacher, X_change, y_change, message
):
    X, y = small_digits
    X = X_change(X) if X_change else X
    y = y_change(y) if y_change else y
    est = make(teacher)
    steps = []
    est.set_params(callbacks=[("spy", _Spy(steps))])
    with pytest.raises(ValueError, match=message):
        est.fit(X, y)
    assert steps == []


def test_student_with_wrong_number_of_outputs_is_refused(small_digits, teacher):
    est = make(teacher, student__num_classes=7)
    with pytest.raises(
        ValueError, match="student has 7 outputs but the teacher has 10"
    ):
        est.fit(*small_digits)


def test_invalid_parameters_name_the_parameter(small_digits, teacher):
    with pytest.raises(ValueError, match="n_projectors"):
        make(teacher, n_projectors=-1).fit(*small_digits)
    with pytest.raises(ValueError, match="temperature"):
        make(teacher, temperature=0).fit(*small_digits)
    with pytest.raises(ValueError, match="projector"):
        make(teacher, projector="conv").fit(*small_digits)


def test_input_arrays_are_not_modified(small_digits, teacher):
    X, y = small_digits
    X64, y_copy = X.astype(np.float64), y.copy()
    X64_copy = X64.copy()
    make(teacher).fit(X64, y)
    np.testing.assert_array_equal(X64, X64_copy)
    np.testing.assert_array_equal(y, y_copy)


class _Spy(Callback):
    """Records every training batch that starts."""

    def __init__(self, steps):
        self.steps = steps

    def on_batch_begin(self, net, **kwargs):
        self.steps.append(kwargs.get("training"))


def test_digits_student_learns_well_and_teacher_is_untouched(digits, trained_teacher):
    X_train, X_test, y_train, y_test = digits
    before = snapshot(trained_teacher)
    est = ProjectorDistiller(
        trained_teacher,
        DigitsCNN,
        student__width=4,
        student__n_features=32,
        n_projectors=3,
        max_epochs=20,
        optimizer=torch.optim.Adam,
        lr=3e-3,
        batch_size=64,
        train_split=None,
        verbose=0,
        random_state=0,
    ).fit(X_train, y_train)
    assert est.n_student_features_ != est.n_teacher_features_
    assert est.score(X_test, y_test) >= 0.90
    assert_untouched(trained_teacher, before)


def _kd_student(teacher, **params):
    return ProjectorDistiller(
        teacher,
        DigitsCNN,
        student__width=4,
        student__n_features=32,
        ce_weight=0.1,
        kd_weight=0.9,
        feature_weight=0.0,
        max_epochs=15,
        optimizer=torch.optim.Adam,
        lr=3e-3,
        batch_size=64,
        train_split=None,
        verbose=0,
        random_state=0,
        **params,
    )


def test_kd_learns_from_a_strong_teacher_with_and_without_logit_projector(
    digits, trained_teacher
):
    """KD (0.1 CE + 0.9 KD) learns; the identity-initialised logit projector
    keeps it there (with PyTorch's random init the raw logits, which predict,
    scored about 0.3 here while KD was satisfied in a scrambled basis)."""
    X_train, X_test, y_train, y_test = digits
    kd = _kd_student(trained_teacher).fit(X_train, y_train).score(X_test, y_test)
    lp = _kd_student(trained_teacher, logit_projector=True).fit(X_train, y_train)
    assert kd >= 0.85
    assert lp.score(X_test, y_test) >= kd - 0.05
    assert not torch.equal(lp.logit_projector_.weight, torch.eye(10))  # it trained


def test_logit_projector_init_identity_or_reference_default(small_digits, teacher):
    est = make(teacher, logit_projector=True, max_epochs=0).fit(*small_digits)
    assert torch.equal(est.logit_projector_.weight, torch.eye(10))
    assert torch.equal(est.logit_projector_.bias, torch.zeros(10))
    ref = make(
        teacher, logit_projector=True, logit_projector_init="default", max_epochs=0
    ).fit(*small_digits)
    assert not torch.equal(ref.logit_projector_.weight, torch.eye(10))
