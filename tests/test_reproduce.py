"""``projkd reproduce`` end to end in a tiny CPU mode."""

from __future__ import annotations

import functools
import json
import lzma

import numpy as np
import pytest
import torch

from projkd import ProjectorDistiller
from projkd.experiments.cli import main
from projkd.experiments.reproduction import (
    FAST_SETTINGS,
    VARIANTS,
    command,
    fast_settings,
    reproduce,
)
from projkd.experiments.reproduction.results import (
    PUBLISHED,
    format_results,
    summarize,
)
from projkd.experiments.reproduction.training import sha256
from projkd.experiments.reproduction.variants import variant_params
from projkd.losses import DISTLoss, DKDLoss, KDLoss
from projkd.models import get_model
from projkd.teacher import TeacherNet

from .conftest import DtypeProbe

_TIMES = {"train_time_s", "images_per_s"}
# 150 images of 100 classes: sklearn's "looks like regression" warning is noise
pytestmark = pytest.mark.filterwarnings("ignore:The number of unique classes")


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory):
    """CIFAR-100 in the shared numpy layout: 150 train and 60 test images."""
    root = tmp_path_factory.mktemp("cifar100")
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (150, 3072), dtype=np.uint8)
    for i, part in enumerate(np.array_split(train, 3)):
        with lzma.open(root / f"train_data.part{i}.npy.xz", "wb") as f:
            np.save(f, part)
    with lzma.open(root / "test_data.npy.xz", "wb") as f:
        np.save(f, rng.integers(0, 256, (60, 3072), dtype=np.uint8))
    np.savez(
        root / "labels.npz",
        train_fine_labels=rng.integers(0, 100, 150).astype(np.uint8),
        test_fine_labels=rng.integers(0, 100, 60).astype(np.uint8),
        fine_label_names=np.array([f"c{i}" for i in range(100)]),
    )
    return root


def _cifar_run(root, out, **kwargs):
    return reproduce(
        dataset="cifar100",
        data_root=root,
        pair="resnet8:digits_student",  # tiny, both 64 features wide
        variants=["kd", "fd0", "fd3"],
        epochs=2,  # the scaled milestones put an lr step after epoch 1
        out=out,
        device="cpu",
        **kwargs,
    )


def _without_times(record):
    return {k: v for k, v in record.items() if k not in _TIMES}


@pytest.fixture(scope="module")
def uninterrupted(tiny_cifar, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return out, _cifar_run(tiny_cifar, out)


@pytest.fixture
def no_plots(monkeypatch):
    """Calls of a budget loop without the plots (rendered again at every call:
    seconds of matplotlib that these tests do not look at)."""
    monkeypatch.setattr(command, "write_plots", lambda *args: [])


def test_stop_on_budget_then_resume_equals_the_uninterrupted_run(
    tiny_cifar, uninterrupted, tmp_path, no_plots
):
    full_out, full = uninterrupted
    assert full["complete"] and full["pending"] == []
    calls = 0
    while True:
        calls += 1
        # a budget too small for anything: each call does one unit of work (an
        # epoch or an evaluation), saves it and stops
        results = _cifar_run(tiny_cifar, tmp_path, time_budget=1e-6)
        if results["complete"]:
            break
        assert results["pending"], "an incomplete call names what is left"
        assert calls < 30
    # 4 networks x (2 epochs + 1 evaluation); the last call also finds all done
    assert calls == 12
    assert _without_times(results["teacher"]) == _without_times(full["teacher"])
    for resumed, whole in zip(results["runs"], full["runs"], strict=True):
        assert _without_times(resumed) == _without_times(whole), resumed["variant"]
    for run in ("teacher", *(f"runs/{v}-seed0" for v in ("kd", "fd0", "fd3"))):
        np.testing.assert_array_equal(
            np.load(tmp_path / run / "test_proba.npy"),
            np.load(full_out / run / "test_proba.npy"),
        )
    # every file a lent GPU machine would hand back stays under 16 MiB
    assert max(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()) < 2**24


def test_lockstep_resumed_on_a_budget_equals_separate_runs(
    tiny_cifar, uninterrupted, tmp_path, no_plots
):
    _, full = uninterrupted
    calls, results = 0, {"complete": False}
    while not results["complete"] and calls < 20:
        calls += 1
        results = _cifar_run(tiny_cifar, tmp_path, time_budget=1e-6, lockstep=True)
    # teacher: 2 epochs + evaluation; students: 2 joint epochs + 3 evaluations
    assert calls == 8
    for joint, alone in zip(results["runs"], full["runs"], strict=True):
        assert joint["lockstep"] and not alone["lockstep"]
        for key in (
            "test_acc",
            "test_top5",
            "train_acc",
            "ece",
            "cka",
            "curve_test_acc",
        ):
            assert joint[key] == alone[key], (joint["variant"], key)


def test_finished_runs_are_never_redone(tiny_cifar, uninterrupted, monkeypatch):
    out, full = uninterrupted

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(ProjectorDistiller, "fit", no_training)
    monkeypatch.setattr(TeacherNet, "fit", no_training)
    again = _cifar_run(tiny_cifar, out)
    assert again["runs"] == full["runs"] and again["teacher"] == full["teacher"]


def test_results_hold_every_figure_and_the_findings(uninterrupted):
    out, results = uninterrupted
    assert json.loads((out / "results.json").read_text())["complete"]
    assert results["device"] == "cpu"
    assert results["fast_settings"]["applied"] == {}  # CPU: fp32, eager
    assert results["deviations"] == []
    fields = {
        "test_acc",
        "test_top5",
        "best_test_acc",
        "best_test_top5",
        "train_acc",
        "gap",
        "ece",
        "overconfidence",
        "cka",
        "train_time_s",
        "images_per_s",
    }
    for run in results["runs"]:
        assert fields <= set(run)
        assert run["best_test_acc"] == max(run["curve_test_acc"])
        assert run["test_acc"] == run["curve_test_acc"][-1]
        assert run["test_acc"] <= run["test_top5"]
        assert run["gap"] == pytest.approx(run["train_acc"] - run["test_acc"])
    assert results["teacher"]["source"] == "trained"
    weights = out / "teacher" / "teacher.pt"
    assert results["teacher"]["sha256"] == sha256(weights)
    assert all(
        t.dtype == torch.float32
        for t in torch.load(weights).values()
        if t.is_floating_point()
    )
    fd0, fd3 = (results["summary"][v]["cka"]["mean"] for v in ("fd0", "fd3"))
    cka_row = next(r for r in results["findings"] if r["metric"] == "cka")
    assert cka_row["fd3_minus_fd0"] == pytest.approx(fd3 - fd0)
    assert cka_row["fd3_as_paper"] == (fd3 > fd0)
    markdown = (out / "results.md").read_text()
    assert "| fd3 |" in markdown and "## The paper's findings" in markdown
    if results["plots"]:  # matplotlib installed
        assert {"reliability.png", "accuracy.png"} <= set(results["plots"])
        assert (out / "reliability.png").stat().st_size > 2000


def test_plots_are_written(uninterrupted):
    pytest.importorskip("matplotlib")
    out, results = uninterrupted
    assert results["plots"] == ["reliability.png", "accuracy.png"]
    for name in results["plots"]:
        assert (out / name).stat().st_size > 2000


def test_cli_digits_mode_and_given_teacher_weights(tmp_path, capsys, monkeypatch):
    common = ["reproduce", "--dataset", "digits", "--epochs", "1", "--subset", "200"]
    first = tmp_path / "first"
    argv = [*common, "--variants", "alone,fd1", "--out", str(first)]
    assert main([*argv, "--time-budget", "1e-6", "--quiet"]) == 3  # stopped
    assert main(argv) == 0  # the same command continues and completes
    assert "| alone |" in capsys.readouterr().out
    trained = json.loads((first / "results.json").read_text())["teacher"]

    monkeypatch.setattr(
        TeacherNet, "fit", lambda *a, **k: pytest.fail("teacher trained")
    )
    weights = first / "teacher" / "teacher.pt"
    second = tmp_path / "second"
    argv = [*common, "--variants", "alone", "--teacher-weights", str(weights)]
    assert main([*argv, "--out", str(second)]) == 0
    given = json.loads((second / "results.json").read_text())["teacher"]
    assert given["source"] == "given" and given["sha256"] == trained["sha256"]
    assert given["test_acc"] == trained["test_acc"]


def test_batch_size_deviation_is_opt_in_and_recorded():
    make, deviations = command._recipe_factory("cifar100", 240, 256)
    params = make("wrn_16_2")
    assert params["batch_size"] == 256 and params["lr"] == pytest.approx(0.2)
    assert deviations and "256" in deviations[0]
    make, deviations = command._recipe_factory("cifar100", 240, None)
    assert make("wrn_16_2")["lr"] == 0.05 and deviations == []


def test_reference_recipe_scales_with_epochs():
    params = command._recipe_factory("cifar100", 60, None)[0]("wrn_16_2")
    scheduler = dict(params["callbacks"])["lr_scheduler"]
    assert scheduler.kwargs["milestones"] == [38, 45, 52]  # 5/8, 6/8, 7/8 of 60
    assert params["optimizer__momentum"] == 0.9
    assert params["optimizer__weight_decay"] == 5e-4
    assert params["train_transform"] is not None  # crop + flip


def test_fast_settings_only_on_cuda():
    assert fast_settings("cpu") == ({}, {})
    assert fast_settings("cuda", fast=False) == ({}, {})
    requested, applied = fast_settings("cuda")
    assert requested == FAST_SETTINGS
    assert applied["compile"] is True  # skorch's own parameter
    assert set(applied) <= set(requested)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(variants=["kd", "fd2"]), "fd2"),
        (dict(pair="digits_teacher"), "TEACHER:STUDENT"),
        (dict(pair="digits_teacher:nonet"), "nonet"),
        (dict(seeds=0), "seeds"),
        (dict(time_budget=0), "time_budget"),
        (dict(time_budget=float("inf")), "finite"),
        (dict(subset=0), "subset"),
        (dict(epoch_test_images=0), "epoch_test_images"),
        (dict(teacher_weights="missing.pt"), "missing.pt"),
    ],
)
def test_bad_input_is_refused_before_training(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        reproduce(dataset="digits", out=tmp_path, epochs=1, **kwargs)
    assert not (tmp_path / "teacher").exists()


def test_fd0_needs_equal_widths(tmp_path):
    with pytest.raises(ValueError, match="equal feature widths"):
        reproduce(
            dataset="digits",
            pair="resnet8:resnet8x4",
            variants=["fd0"],
            out=tmp_path,
            epochs=1,
        )


def test_other_settings_in_the_same_folder_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(command, "run_all", lambda ctx, variants, seeds: ([], []))
    reproduce(dataset="digits", out=tmp_path, epochs=1, variants=["alone"])
    with pytest.raises(ValueError, match="epochs: 1 there, 2 now"):
        reproduce(dataset="digits", out=tmp_path, epochs=2, variants=["alone"])


def test_published_numbers_and_findings_in_the_table():
    def run(variant, test_acc, cka, ece):
        return dict(
            model=variant,
            variant=variant,
            seed=0,
            test_acc=test_acc,
            best_test_acc=test_acc + 0.01,
            train_acc=0.9,
            gap=0.9 - test_acc,
            ece=ece,
            overconfidence=ece,
            cka=cka,
        )

    settings = dict(
        dataset="cifar100",
        subset=None,
        pair="wrn_40_2:wrn_16_2",
        epochs=240,
        fast_settings={},
        deviations=[],
    )
    summary_args = dict(
        settings=settings,
        variants=["alone", "fd0", "fd1"],
        seeds=1,
        records=[
            run("alone", 0.70, 0.5, 0.1),
            run("fd0", 0.72, 0.6, 0.10),
            run("fd1", 0.74, 0.55, 0.05),
        ],
        pending=[],
        device_name="NVIDIA H100",
        fast_requested={},
        fast_unavailable=[],
    )
    results = summarize(**summary_args)
    assert results["published"] == PUBLISHED["wrn_40_2:wrn_16_2"]
    by_metric = {row["metric"]: row for row in results["findings"]}
    assert by_metric["test_acc"]["fd1_minus_fd0"] == pytest.approx(0.02)
    assert by_metric["test_acc"]["fd1_as_paper"] is True
    assert by_metric["cka"]["fd1_as_paper"] is False
    assert by_metric["ece"]["fd1_as_paper"] is True
    markdown = format_results(results)
    assert "| alone (student) | 73.26 | 71.00 | 70.00 |" in markdown
    assert "CRD 75.48" in markdown and "NVIDIA H100" in markdown
    assert "| 1 | test top-1 % | higher | 72.00 | 74.00 | – | 2.00 | – | yes, – |" in (
        markdown
    )
    assert "Per seed" not in markdown  # one seed: the summary is the table

    two = [r | {"seed": s} for r in results["runs"] for s in (0, 1)]
    results = summarize(**(summary_args | {"seeds": 2, "records": two}))
    markdown = format_results(results)
    assert "| fd1 | 74.00 ± 0.00 |" in markdown
    assert "| fd1 (seed 1) | 74.00 |" in markdown


def test_variants_are_the_papers():
    assert VARIANTS["kd"]["ce_weight"] == 0.1 and VARIANTS["kd"]["kd_weight"] == 0.9
    assert [VARIANTS[v]["n_projectors"] for v in ("fd0", "fd1", "fd3")] == [0, 1, 3]
    assert all(VARIANTS[v]["feature_weight"] == 25.0 for v in ("fd0", "fd1", "fd3"))
    assert VARIANTS["kd_lp"]["logit_projector_init"] == "identity"


def test_dkd_and_dist_variants_are_the_authors_recipes():
    dkd = variant_params("dkd", "wrn_40_2", "wrn_16_2")
    assert (dkd["ce_weight"], dkd["kd_weight"], dkd["feature_weight"]) == (1, 1, 0)
    assert dkd["logit_loss"] == DKDLoss(alpha=1.0, beta=6.0, warmup=20 / 240)
    assert variant_params("dkd", "resnet56", "resnet20")["logit_loss"].beta == 2.0
    assert variant_params("dkd_lp", "resnet32x4", "resnet8x4")["logit_loss"].beta == 8
    assert VARIANTS["dkd"]["logit_loss"].beta == 8.0  # the table is not modified
    dist = variant_params("dist_lp", "resnet32x4", "resnet8x4")
    assert (dist["ce_weight"], dist["kd_weight"]) == (1.0, 2.0)
    assert dist["logit_loss"] == DISTLoss(beta=1.0, gamma=1.0)
    assert dist["logit_projector"] and dist["logit_projector_init"] == "identity"
    assert "temperature" not in dist  # T = 4, the estimator's default


def test_logit_standardization_and_srd_variants_are_the_authors_recipes():
    kd_ls = variant_params("kd_ls", "resnet32x4", "resnet8x4")
    assert (kd_ls["ce_weight"], kd_ls["kd_weight"], kd_ls["temperature"]) == (
        0.1,
        9.0,
        2.0,
    )
    assert kd_ls["logit_loss"] == KDLoss(standardize=True)
    assert kd_ls["feature_weight"] == 0.0
    # DKD + LS: alpha and beta times 9 (kd_weight 9), CE 1, T 2, the pair's beta
    dkd_ls = variant_params("dkd_ls", "wrn_40_2", "wrn_16_2")
    assert (dkd_ls["ce_weight"], dkd_ls["kd_weight"], dkd_ls["temperature"]) == (
        1.0,
        9.0,
        2.0,
    )
    assert dkd_ls["logit_loss"] == DKDLoss(
        alpha=1.0, beta=6.0, warmup=20 / 240, standardize=True
    )
    assert variant_params("dkd_ls", "resnet32x4", "resnet8x4")["logit_loss"].beta == 8
    assert VARIANTS["dkd_ls"]["logit_loss"].beta == 8.0  # the table is not modified
    srd = variant_params("srd", "resnet32x4", "resnet8x4")
    assert (srd["ce_weight"], srd["kd_weight"], srd["temperature"]) == (1, 1, 1)
    assert (srd["feature_loss"], srd["feature_weight"]) == ("srd", 2.0)
    assert srd["n_projectors"] == 1 and srd["projector"] is torch.nn.Linear
    # the paper's variants keep the estimator's T = 4
    assert all("temperature" not in VARIANTS[v] for v in ("kd", "dkd", "fd3"))


def test_new_variants_run_in_a_tiny_digits_reproduce(tmp_path):
    results = reproduce(
        dataset="digits",
        subset=200,
        epochs=1,
        variants=["kd_ls", "dkd_ls", "srd"],
        out=tmp_path,
        device="cpu",
    )
    assert results["complete"]
    params = {run["variant"]: run["params"] for run in results["runs"]}
    assert params["kd_ls"]["temperature"] == 2.0
    assert params["kd_ls"]["logit_loss"] == "KDLoss(standardize=True)"
    assert params["dkd_ls"]["kd_weight"] == 9.0
    assert "standardize=True" in params["dkd_ls"]["logit_loss"]
    assert params["srd"]["feature_loss"] == "srd"
    assert params["srd"]["projector"] == "Linear"
    assert params["srd"]["temperature"] == 1.0
    for run in results["runs"]:
        assert 0.0 <= run["test_acc"] <= 1.0 and np.isfinite(run["cka"])
    assert "| srd |" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize(
    ("pair", "kd_ls", "dkd_ls"),
    [("resnet32x4:resnet8x4", 76.62, 77.01), ("wrn_40_2:wrn_16_2", 76.11, 76.39)],
)
def test_published_logit_standardization_numbers_stand_beside_the_runs(
    pair, kd_ls, dkd_ls
):
    results = _one_run_summary(pair, "kd_ls")
    markdown = format_results(results)
    # best-epoch figures, as the other published ones, beside this run's
    assert "best epoch of 240" in markdown and "arXiv:2403.01427" in markdown
    assert f"| kd_ls (KD+LS) | {kd_ls:.2f} | 76.00 | 75.00 |" in markdown
    assert f"| dkd_ls (DKD+LS) | {dkd_ls:.2f} | – | – |" in markdown
    assert "KD+LS" not in markdown.split("Other published methods")[1]


def _one_run_summary(pair, variant):
    """The summary of one finished 240-epoch run of ``variant`` on ``pair``:
    75% at the last epoch, 76% at the best."""
    settings = dict(
        dataset="cifar100",
        subset=None,
        pair=pair,
        epochs=240,
        fast_settings={},
        deviations=[],
    )
    record = dict(
        model=variant, variant=variant, seed=0, test_acc=0.75, best_test_acc=0.76
    )
    return summarize(
        settings=settings,
        variants=[variant],
        seeds=1,
        records=[record],
        pending=[],
        device_name="cpu",
        fast_requested={},
        fast_unavailable=[],
    )


def test_published_dkd_and_dist_numbers_stand_beside_the_pairs_runs():
    results = _one_run_summary("resnet32x4:resnet8x4", "dkd")
    markdown = format_results(results)
    assert "| dkd (DKD) | 76.32 | 76.00 | 75.00 |" in markdown
    assert "| dist (DIST) | 76.31 | – | – |" in markdown
    results["published"] = PUBLISHED["wrn_40_2:wrn_16_2"]  # no DIST number
    assert "(DIST)" not in format_results(results)


def test_teacher_fast_path_runs_on_cpu(small_digits):
    """bf16 autocast and channels_last, as used for the teacher on CUDA."""
    X, y = small_digits
    probe = DtypeProbe()
    net = TeacherNet(
        functools.partial(get_model, "digits_student"),
        criterion=torch.nn.CrossEntropyLoss,
        classes=np.arange(10),
        max_epochs=1,
        train_split=None,
        verbose=0,
        mixed_precision="bf16",
        channels_last=True,
        callbacks=[probe],
    ).fit(X, y)
    assert set(probe.dtypes) == {torch.bfloat16}  # autocast ran
    conv = net.module_.features[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    logits = net.forward(X[:4])
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
