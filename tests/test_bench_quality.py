"""The MNIST quality benchmark: its statistics, its seeding, a tiny end-to-end run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from projkd.losses import KDLoss, SRDLoss
from projkd.models import MnistCNN, get_model, list_models

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TEACHER = ROOT / "benchmarks" / "results" / "quality_mnist_teacher.pt"
needs_mnist = pytest.mark.skipif(
    not (SHARED / "mnist").is_dir(), reason="shared MNIST data absent"
)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "bench_quality", ROOT / "benchmarks" / "bench_quality.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_quality"] = module  # dataclasses/pickling look it up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_quality", None)


def test_paired_interval_matches_scipy_one_sample_t(bench):
    a = np.array([0.91, 0.93, 0.92, 0.95, 0.90])
    b = np.array([0.90, 0.90, 0.91, 0.92, 0.91])
    out = bench.paired(a, b, +1)
    ci = stats.ttest_1samp(a - b, 0.0).confidence_interval(0.95)
    assert out["mean"] == pytest.approx(np.mean(a - b))
    assert (out["low"], out["high"]) == pytest.approx((ci.low, ci.high))
    assert out["differences"] == pytest.approx(list(a - b))


@pytest.mark.parametrize(
    ("a", "b", "sign", "verdict"),
    [
        ([2.0, 2.1, 1.9], [1.0, 1.0, 1.0], +1, "holds"),
        ([2.0, 2.1, 1.9], [1.0, 1.0, 1.0], -1, "does not hold"),  # lower is better
        ([1.0, 3.0, -1.0], [1.0, 1.0, 1.0], +1, "cannot tell at this scale"),
    ],
)
def test_paired_verdicts(bench, a, b, sign, verdict):
    assert bench.paired(a, b, sign)["verdict"] == verdict


def test_paired_needs_two_seeds(bench):
    with pytest.raises(ValueError, match="at least 2 seeds"):
        bench.paired([1.0], [0.5], +1)


def test_every_claim_compares_two_known_variants(bench):
    for _, a, b, metric, sign in bench.CLAIMS:
        assert a in bench.VARIANTS and b in bench.VARIANTS and a != b
        assert metric in bench.METRICS and sign in (-1, 1)


# issue 30's rows, what each differs in from the row it is compared with
NEW_ROWS = {
    ("KD + LS", "KD"): {"kd_weight", "temperature", "logit_loss"},
    ("KD + LS", "KD at T 2, weight 9 (LS's recipe, no LS)"): {"logit_loss"},
    ("feature SRD, 1 projector", "feature, 1 projector"): {
        "feature_loss",
        "feature_weight",
    },
    ("feature SRD, 3 projectors", "feature, 3 projectors"): {
        "feature_loss",
        "feature_weight",
    },
    ("feature SRD, 3 projectors", "feature SRD, 1 projector"): {"n_projectors"},
    ("feature, 3 projectors + hints at 2 stages", "feature, 3 projectors"): {
        "hint_layers",
        "hint_weight",
    },
}


@pytest.mark.parametrize(("a", "b"), list(NEW_ROWS), ids=" vs ".join)
def test_new_rows_are_paired_with_their_baselines(bench, a, b):
    """Each new claim compares two rows that differ in what it names alone,
    and the rows carry the recipes the docstring states."""
    assert (a, b) in {(c[1], c[2]) for c in bench.CLAIMS}
    pa, pb = (
        bench.variant_params(bench.VARIANTS[a]),
        bench.variant_params(bench.VARIANTS[b]),
    )
    missing = object()  # an estimator default
    differ = {
        k for k in pa.keys() | pb.keys() if pa.get(k, missing) != pb.get(k, missing)
    }
    assert differ == NEW_ROWS[a, b]


def test_new_rows_recipes(bench):
    ls = bench.variant_params(bench.VARIANTS["KD + LS"])
    assert (ls["ce_weight"], ls["kd_weight"], ls["temperature"]) == (0.1, 9.0, 2.0)
    assert ls["logit_loss"] == KDLoss(standardize=True)
    srd = bench.variant_params(bench.VARIANTS["feature SRD, 1 projector"])
    assert (srd["feature_loss"], srd["feature_weight"], srd["kd_weight"]) == (
        "srd",
        2.0,
        0.0,
    )
    hints = bench.variant_params(
        bench.VARIANTS["feature, 3 projectors + hints at 2 stages"]
    )
    assert hints["hint_layers"] == bench.HINT_LAYERS and hints["hint_weight"] == 25.0
    assert "hint_loss" not in hints  # the default, PEFD's cosine per position


def test_hint_layers_are_the_first_two_stages_of_the_mnist_networks(bench):
    """Each pair: a stage's last ReLU in both networks, at the same size."""
    x = torch.zeros(2, 1, 28, 28)
    sizes = {}
    for role, net in (
        ("student", get_model("mnist_student")),
        ("teacher", get_model("mnist_teacher")),
    ):
        modules = dict(net.named_modules())
        index = 0 if role == "student" else 1
        for pair in bench.HINT_LAYERS:
            module = modules[pair[index]]
            assert isinstance(module, torch.nn.ReLU), pair
            module.register_forward_hook(
                lambda m, i, out, key=(role, pair): sizes.__setitem__(key, out.shape)
            )
        net.eval()(x)
    for pair, size in zip(bench.HINT_LAYERS, ((28, 28), (14, 14)), strict=True):
        assert sizes["student", pair][-2:] == sizes["teacher", pair][-2:] == size


@pytest.mark.parametrize(
    "name",
    [
        "KD + LS",
        "feature SRD, 3 projectors",
        "feature, 3 projectors + hints at 2 stages",
    ],
)
def test_new_rows_fit_with_their_terms(bench, name):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 1, 28, 28)).astype(np.float32)
    y = np.arange(64) % 10
    data = bench.Data(X, y, X[:16], y[:16], 10, 1)
    torch.manual_seed(0)
    teacher = get_model("mnist_teacher").eval()
    args = bench.parse_args(["--tiny"])
    args.epochs = 1
    est = bench.fit_student(teacher, bench.VARIANTS[name], 0, data, X, y, args)
    last = est.history[-1]
    assert np.isfinite(last["train_loss"])
    if name == "KD + LS":
        assert last["train_kd"] > 0 and last["train_feat"] == 0
    elif "SRD" in name:
        assert isinstance(est.feature_loss_, SRDLoss) and len(est.projectors_) == 3
        assert np.isfinite(last["train_feat"])  # log sum |BN(f(s)) - BN(t)|^4
    else:
        assert 0 < last["train_hint"] <= 2  # a mean of 1 - cos
        assert len(est.hint_projectors_) == 2


def test_mnist_models_are_registered_with_equal_feature_widths():
    assert {"mnist_teacher", "mnist_student"} <= set(list_models())
    teacher, student = get_model("mnist_teacher"), get_model("mnist_student")
    x = torch.zeros(2, 1, 28, 28)
    # "same dimensions": no-projector feature distillation needs equal widths
    assert teacher.forward_features(x).shape == student.forward_features(x).shape
    assert get_model("mnist_student", n_features=32).forward_features(x).shape == (
        2,
        32,
    )
    n_params = [sum(p.numel() for p in m.parameters()) for m in (teacher, student)]
    assert n_params[1] < n_params[0] / 3


def test_students_are_built_inside_the_seeded_fit(bench):
    """Same seed, same student; another seed, another student (issue #11, 8)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 1, 28, 28)).astype(np.float32)
    y = np.arange(64) % 10
    data = bench.Data(X, y, X[:16], y[:16], 10, 1)
    torch.manual_seed(0)
    teacher = MnistCNN(widths=(4, 8), n_features=128).eval()
    args = bench.parse_args(["--tiny"])
    args.epochs = 1

    def fitted(seed):
        torch.manual_seed(1234 + seed)  # the global state must not matter
        est = bench.fit_student(
            teacher, bench.VARIANTS["feature, 1 projector"], seed, data, X, y, args
        )
        return est.module_.classifier.weight.detach().clone()

    assert torch.equal(fitted(0), fitted(0))
    assert not torch.equal(fitted(0), fitted(1))


def test_stored_teacher_is_small_float32_and_strong(bench):
    # the very weights behind the figures of quality_mnist_teacher.md
    note = TEACHER.with_suffix(".md").read_text()
    assert f"sha256: `{bench.sha256(TEACHER)}`" in note
    assert TEACHER.stat().st_size < 2_000_000
    state = torch.load(TEACHER, weights_only=True)
    floats = [v for v in state.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float32 for v in floats)
    teacher = bench.load_teacher(get_model("mnist_teacher", num_classes=10), TEACHER)
    if (SHARED / "mnist").is_dir():
        data = bench.load_data("mnist", str(SHARED / "mnist"))
        assert bench.accuracy(teacher, data.X_test[:2000], data.y_test[:2000]) > 0.98


@needs_mnist
def test_tiny_run_writes_table_and_verdicts(bench, tmp_path):
    variants = ["student alone", "feature, no projector", "feature, 1 projector"]
    result = bench.main(["--tiny", "--out", str(tmp_path), "--variants", *variants])
    saved = json.loads((tmp_path / "quality_mnist.json").read_text())
    assert list(saved["variants"]) == variants
    for name in variants:
        assert len(saved["per_seed"][name]) == 2
        assert len(saved["per_seed"][name][0]["last_test_acc"]) == 2  # 2 epochs
        assert 0.0 <= saved["variants"][name]["test_acc"]["mean"] <= 1.0
    # only the claims whose two variants ran, each with its interval and verdict
    assert [c["claim"] for c in saved["claims"]] == [
        c[0] for c in bench.CLAIMS if c[1] in variants and c[2] in variants
    ]
    for claim in saved["claims"]:
        assert claim["low"] <= claim["mean"] <= claim["high"]
        assert claim["verdict"] in (
            "holds",
            "does not hold",
            "cannot tell at this scale",
        )
    table = (tmp_path / "quality_mnist.md").read_text()
    assert "| feature, 1 projector |" in table and "--tiny" in table
    assert result["setup"]["seeds"] == 2
    # the table and claims can be rebuilt from the saved per-seed rows alone
    again = tmp_path / "again"
    bench.main(
        ["--from-json", str(tmp_path / "quality_mnist.json"), "--out", str(again)]
    )
    assert (again / "quality_mnist.md").read_text() == table
    # the first seed's pictures next to the table (matplotlib is in the test extra)
    pngs = {p.name for p in tmp_path.glob("quality_mnist_*.png")}
    assert pngs == {
        "quality_mnist_reliability.png",
        "quality_mnist_accuracy.png",
        "quality_mnist_cka_no_projector.png",
    }
