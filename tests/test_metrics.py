import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torchmetrics.functional.classification import multiclass_calibration_error

from projkd.metrics import (
    MinibatchCKA,
    expected_calibration_error,
    hsic,
    linear_cka,
    overconfidence,
    rbf_cka,
    reliability_curve,
)


def random_predictions(rng, n=400, k=5):
    proba = rng.dirichlet(np.full(k, 0.7), size=n)
    y = np.where(rng.random(n) < 0.6, proba.argmax(1), rng.integers(0, k, n))
    return y, proba


# ---------------------------------------------------------------- calibration
@pytest.mark.parametrize("norm", ["l1", "max", "l2"])
@pytest.mark.parametrize("n_bins", [1, 5, 15, 40])
def test_ece_equals_torchmetrics(norm, n_bins):
    rng = np.random.default_rng(n_bins)
    y, proba = random_predictions(rng)
    proba = proba.astype(np.float32)  # torchmetrics computes in float32
    expected = multiclass_calibration_error(
        torch.as_tensor(proba),
        torch.as_tensor(y),
        num_classes=5,
        n_bins=n_bins,
        norm=norm,
    )
    assert expected_calibration_error(
        y, proba, n_bins=n_bins, norm=norm
    ) == pytest.approx(float(expected), rel=1e-5)


def test_binary_probabilities_of_the_positive_class():
    rng = np.random.default_rng(0)
    p = rng.random(200)
    y = (rng.random(200) < p).astype(int)
    two_columns = np.column_stack([1 - p, p])
    assert expected_calibration_error(y, p) == expected_calibration_error(
        y, two_columns
    )
    assert overconfidence(y, p) == pytest.approx(overconfidence(y, two_columns))


def test_string_labels_and_a_fold_missing_a_class():
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    y = np.array(["cat", "dog", "dog"])  # no "eel" in this fold
    with pytest.raises(ValueError, match="pass labels="):
        expected_calibration_error(y, proba)
    ece = expected_calibration_error(y, proba, labels=["cat", "dog", "eel"], n_bins=10)
    # bins: 0.7 right, 0.8 right, 0.4 wrong -> (0.3 + 0.2 + 0.4) / 3
    assert ece == pytest.approx(0.3)


def test_reliability_curve_bins_add_up_to_the_ece():
    rng = np.random.default_rng(1)
    y, proba = random_predictions(rng)
    curve = reliability_curve(y, proba, n_bins=10)
    assert curve.counts.sum() == len(y)
    assert curve.edges.tolist() == pytest.approx(np.linspace(0, 1, 11).tolist())
    filled = curve.counts > 0
    assert np.isnan(curve.accuracy[~filled]).all()
    weighted = np.sum(
        curve.counts[filled]
        / len(y)
        * np.abs(curve.accuracy - curve.confidence)[filled]
    )
    assert weighted == pytest.approx(expected_calibration_error(y, proba, n_bins=10))
    conf = proba.max(1)
    in_top_bin = conf > 0.9
    assert curve.confidence[-1] == pytest.approx(conf[in_top_bin].mean())


def test_overconfidence_by_hand():
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3]])
    y = np.array([0, 1, 1, 1])  # right, wrong, right, wrong
    assert overconfidence(y, proba) == pytest.approx((0.9 + 0.6 + 0.8 + 0.7) / 4 - 0.5)


@st.composite
def calibrated_binary(draw):
    """Groups of samples sharing a confidence c = j / m with exactly j right."""
    groups = draw(
        st.lists(
            st.integers(1, 20).flatmap(
                lambda m: st.tuples(
                    st.just(m), st.integers((m + 1) // 2 if m > 1 else 1, m)
                )
            ),
            min_size=1,
            max_size=6,
        )
    )
    y, p = [], []
    for m, j in groups:
        c = j / m
        if c <= 0.5:
            continue
        y += [1] * j + [0] * (m - j)
        p += [c] * m
    return np.array(y + [1, 0]), np.array(p + [1.0, 0.0])


@settings(max_examples=50, deadline=None)
@given(calibrated_binary(), st.integers(1, 30))
def test_ece_is_zero_for_calibrated_predictions(data, n_bins):
    y, p = data
    # each bin mixes groups whose accuracy equals their confidence
    assert expected_calibration_error(
        y, p, n_bins=n_bins, labels=[0, 1]
    ) == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 30), st.integers(2, 6))
def test_ece_is_in_unit_interval_and_bounds_overconfidence(seed, n_bins, k):
    rng = np.random.default_rng(seed)
    y, proba = random_predictions(rng, n=60, k=k)
    labels = np.arange(k)
    ece = expected_calibration_error(y, proba, n_bins=n_bins, labels=labels)
    assert 0.0 <= ece <= 1.0
    assert ece >= abs(overconfidence(y, proba, labels=labels)) - 1e-12
    assert (
        expected_calibration_error(y, proba, n_bins=n_bins, norm="max", labels=labels)
        >= ece - 1e-12
    )


@pytest.mark.parametrize(
    "y, proba, kwargs, message",
    [
        ([0, 1, 1], [[0.5, 0.5], [0.5, 0.5]], {}, "3 samples but y_prob has 2"),
        ([0, 1], [[np.nan, 1.0], [0.5, 0.5]], {}, "NaN"),
        ([0, 1], [[1.2, -0.2], [0.5, 0.5]], {}, r"in \[0, 1\]"),
        ([0, 1], [[0.5, 0.6], [0.5, 0.5]], {}, "sum to 1"),
        ([0, 1], [[0.5, 0.5], [0.5, 0.5]], {"n_bins": 0}, "n_bins"),
        ([0, 1], [[0.5, 0.5], [0.5, 0.5]], {"norm": "l3"}, "norm"),
        ([0, 2], [[0.5, 0.5], [0.5, 0.5]], {"labels": [0, 1]}, "not in labels"),
    ],
)
def test_calibration_input_errors(y, proba, kwargs, message):
    with pytest.raises(ValueError, match=message):
        expected_calibration_error(y, proba, **kwargs)


# ------------------------------------------------------------------------ CKA
@pytest.fixture
def reference_vectors():
    """The test vector of the CKA authors' notebook (../shared/METHOD.md)."""
    np.random.seed(1337)
    X = np.random.randn(100, 10)
    Y = np.random.randn(100, 10) + X
    return X, Y


def test_cka_reproduces_the_reference_notebook(reference_vectors):
    X, Y = reference_vectors
    assert linear_cka(X, Y) == pytest.approx(0.55761, abs=5e-6)
    assert linear_cka(X, Y, debiased=True) == pytest.approx(0.51346, abs=5e-6)
    assert rbf_cka(X, Y, threshold=0.5) == pytest.approx(0.65483, abs=5e-6)


@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_equals_the_gram_form(debiased):
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(50, 7)), rng.normal(size=(50, 12))
    K, L = torch.as_tensor(X @ X.T), torch.as_tensor(Y @ Y.T)
    gram = hsic(K, L, unbiased=debiased) / torch.sqrt(
        hsic(K, K, unbiased=debiased) * hsic(L, L, unbiased=debiased)
    )
    assert linear_cka(X, Y, debiased=debiased) == pytest.approx(float(gram), rel=1e-9)


def test_linear_cka_accepts_torch_and_float32_and_leaves_inputs_alone():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(40, 6)).astype(np.float32)
    Y = X @ rng.normal(size=(6, 3)).astype(np.float32)
    X_copy = X.copy()
    value = linear_cka(torch.as_tensor(X), Y)
    np.testing.assert_array_equal(X, X_copy)
    assert value == pytest.approx(
        linear_cka(X.astype(np.float64), Y.astype(np.float64))
    )


matrices = arrays(
    np.float64,
    st.tuples(st.integers(6, 30), st.integers(1, 8)),
    elements=st.floats(-10, 10, allow_nan=False, allow_subnormal=False),
)


def _well_posed(X):
    squared_distances = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    return np.linalg.norm(X - X.mean(0)) > 1e-3 and np.median(squared_distances) > 1e-3


@settings(max_examples=60, deadline=None)
@given(matrices, st.integers(1, 8), st.floats(0.1, 10), st.integers(0, 2**32 - 1))
def test_cka_properties(X, q, scale, seed):
    if not _well_posed(X):
        return
    rng = np.random.default_rng(seed)
    Y = rng.normal(size=(X.shape[0], q))
    Q, _ = np.linalg.qr(rng.normal(size=(X.shape[1], X.shape[1])))
    assert linear_cka(X, X) == pytest.approx(1.0)
    value = linear_cka(X, Y)
    assert -1e-12 <= value <= 1 + 1e-12
    assert linear_cka(X @ Q, Y) == pytest.approx(value, rel=1e-6, abs=1e-9)
    assert linear_cka(scale * X, Y) == pytest.approx(value, rel=1e-6, abs=1e-9)
    assert rbf_cka(X, X) == pytest.approx(1.0)
    assert rbf_cka(X @ Q, scale * Y) == pytest.approx(rbf_cka(X, Y), rel=1e-6, abs=1e-9)


def test_minibatch_cka_of_one_batch_is_the_debiased_cka(reference_vectors):
    X, Y = reference_vectors
    assert MinibatchCKA().update(X, Y).compute() == pytest.approx(
        linear_cka(X, Y, debiased=True), rel=1e-9
    )


def _unbiased_hsic_reference(K, L):
    """Song et al. (2012), eq. (5), written out with explicit ones vectors."""
    n = K.shape[0]
    K, L = K.copy(), L.copy()
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    one = np.ones(n)
    term = np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
    term -= 2.0 / (n - 2) * (one @ K @ L @ one)
    return term / (n * (n - 3))


def test_minibatch_cka_over_many_batches_is_the_mean_hsic_ratio():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(96, 5))
    Y = np.tanh(X @ rng.normal(size=(5, 9))) + 0.3 * rng.normal(size=(96, 9))
    cka = MinibatchCKA()
    xy, xx, yy = [], [], []
    for Xb, Yb in zip(np.split(X, 6), np.split(Y, 6), strict=True):
        cka.update(torch.as_tensor(Xb, dtype=torch.float32), Yb)
        K, L = Xb @ Xb.T, Yb @ Yb.T
        xy.append(_unbiased_hsic_reference(K, L))
        xx.append(_unbiased_hsic_reference(K, K))
        yy.append(_unbiased_hsic_reference(L, L))
    expected = np.mean(xy) / np.sqrt(np.mean(xx) * np.mean(yy))
    assert cka.n_batches == 6
    assert cka.compute() == pytest.approx(expected, rel=1e-5)
    assert cka.reset().n_batches == 0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: linear_cka(np.ones((5, 2)), np.ones((6, 2))), "5 samples but Y has 6"),
        (
            lambda: linear_cka(np.full((5, 2), np.inf), np.ones((5, 2))),
            "NaN or infinity",
        ),
        (lambda: linear_cka(np.ones((5,)), np.ones((5, 2))), "2-D"),
        (lambda: linear_cka(np.eye(3), np.eye(3), debiased=True), "at least 4"),
        (lambda: rbf_cka(np.eye(3), np.eye(3), debiased=True), "at least 4"),
        (lambda: MinibatchCKA().update(np.eye(3), np.eye(3)), "at least 4"),
        (lambda: MinibatchCKA().compute(), "before any update"),
        (lambda: rbf_cka(np.eye(5), np.eye(5), threshold=0), "threshold"),
        (lambda: linear_cka(np.ones((5, 2)), np.eye(5)), "constant"),
        (lambda: rbf_cka(np.zeros((5, 2)), np.eye(5)), "identical"),
    ],
)
def test_cka_input_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
