"""The examples run as they are (few epochs, in a scratch folder), and what
they print is parsed and checked: numbers in range, tables consistent with
themselves, and the quickstart's student actually learning."""

import ast
import math
import re
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.py"))
NUMBER = r"-?\d+(?:\.\d+)?"


def check_quickstart(out):
    """8 epochs: the distilled student must have learnt the digits."""
    predicted = re.search(r"^predicted: \[([\d ]+)\]$", out, re.M)
    true = re.search(r"^true: +\[([\d ]+)\]$", out, re.M)
    assert predicted and true, out
    predicted, true = predicted[1].split(), true[1].split()
    assert len(predicted) == len(true) == 10
    assert set(predicted) <= {str(d) for d in range(10)}
    accuracy = float(re.search(rf"student test accuracy: ({NUMBER})", out)[1])
    assert accuracy >= 0.8  # chance is 0.1
    terms = re.search(r"loss terms of the last epoch: (\{.*\})", out)[1]
    terms = {
        k: float(v)
        for k, v in re.findall(rf"'(\w+)': (?:np\.float\d+\()?({NUMBER})", terms)
    }
    assert set(terms) == {"train_ce", "train_feat"}
    assert 0 < terms["train_ce"] < math.log(10)  # below the loss of chance
    assert 0 <= terms["train_feat"] <= 2  # 1 - cos lies in [0, 2]


def check_pipeline(out):
    rows = dict(re.findall(r"^(.+): \[([^\]]+)\]$", out, re.M))
    assert set(rows) == {
        "distiller as classifier",
        "student features + logistic regression",
    }, out
    for name, scores in rows.items():
        scores = [float(s) for s in scores.split()]
        assert len(scores) == 3, name  # cv=3
        assert all(0 <= s <= 1 for s in scores), name
    embedded = [
        float(s) for s in rows["student features + logistic regression"].split()
    ]
    assert min(embedded) > 0.3  # a linear model on the student's features


def check_grid_search(out):
    rows = re.findall(
        rf"^(\{{.*\}}): accuracy ({NUMBER}), ECE ({NUMBER}), CKA ({NUMBER})$",
        out,
        re.M,
    )
    assert [ast.literal_eval(params) for params, *_ in rows] == [
        {"n_projectors": k} for k in (1, 2, 3, 4)
    ], out
    accuracy = {params: float(acc) for params, acc, _, _ in rows}
    for _, acc, ece, cka in rows:
        assert 0 <= float(acc) <= 1 and 0 <= float(ece) <= 1 and 0 <= float(cka) <= 1
    best = re.search(r"^best: (\{.*\})$", out, re.M)[1]
    assert accuracy[best] == max(accuracy.values())  # refit="accuracy"


def check_logit_losses(out):
    rows = re.findall(rf"^(\{{.*\}}): accuracy ({NUMBER})$", out, re.M)
    assert len(rows) == 6, out  # 3 logit losses x with/without a logit projector
    assert {"'logit_projector': False", "'logit_projector': True"} <= {
        part.strip("{} ") for params, _ in rows for part in params.split(", ")
    }, out
    accuracy = {params: float(acc) for params, acc in rows}
    assert all(0 <= acc <= 1 for acc in accuracy.values())
    best = re.search(r"^best: (\{.*\})$", out, re.M)[1]
    assert accuracy[best] == max(accuracy.values())
    assert "train_loss" in out


def check_projector_recipes(out):
    rows = re.findall(
        rf"^feature (cosine|srd), LS (on|off), hints (none|2 stages): "
        rf"accuracy ({NUMBER})$",
        out,
        re.M,
    )
    # every combination once: 2 feature terms x LS on/off x hints or not
    assert sorted(candidate for *candidate, _ in rows) == sorted(
        [loss, ls, hints]
        for loss in ("cosine", "srd")
        for ls in ("on", "off")
        for hints in ("none", "2 stages")
    ), out
    accuracy = {tuple(candidate): float(acc) for *candidate, acc in rows}
    assert all(0 <= acc <= 1 for acc in accuracy.values())
    best = re.search(
        r"^best: feature (cosine|srd), LS (on|off), hints (none|2 stages)$", out, re.M
    )
    assert best and accuracy[best.groups()] == max(accuracy.values()), out
    terms = dict(re.findall(rf"(train_\w+) ({NUMBER})", out.split("last epoch:")[1]))
    assert {"train_ce", "train_kd", "train_feat"} <= set(terms), out
    assert ("train_hint" in terms) == (best[3] == "2 stages")
    if best[1] == "cosine":
        assert 0 <= float(terms["train_feat"]) <= 2  # 1 - cos lies in [0, 2]
    if "train_hint" in terms:
        assert 0 <= float(terms["train_hint"]) <= 2  # a mean of 1 - cos


def check_analysis_plots(out):
    header = "| model | train acc % | test acc % | gap % | ECE % | over-conf. % | CKA |"
    assert header in out, out
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 7 and re.fullmatch(NUMBER, cells[1]):
            rows[cells[0]] = [float(c) for c in cells[1:]]
    assert set(rows) == {"teacher", "no projector", "3 projectors"}
    for name, (train, test, gap, ece, overconfidence, cka) in rows.items():
        assert 0 <= train <= 100 and 0 <= test <= 100, name
        assert gap == pytest.approx(train - test, abs=0.011), name
        assert 0 <= ece <= 100 and 0 <= cka <= 1, name
        # |mean confidence - accuracy| is a weighted mean of the bins' gaps
        assert abs(overconfidence) <= ece + 0.011, name
    assert rows["teacher"][-1] == pytest.approx(1.0)  # CKA with itself


def check_huggingface(out):
    rows = re.findall(
        rf"^(.+): features (\d+) -> (\d+), test accuracy ({NUMBER})$", out, re.M
    )
    assert len(rows) == 2, out  # a CNN and a ConvNeXt student
    for _, _, _, acc in rows:
        assert 0 <= float(acc) <= 1
    # the widths the example configures: CNN 32, ConvNeXt 32 (its last
    # stage), the ViT's hidden size 64
    assert {(d_s, d_t) for _, d_s, d_t, _ in rows} == {("32", "64")}
    layer = re.search(
        rf"^teacher_layer='vit.layernorm': test accuracy ({NUMBER})$", out, re.M
    )
    assert layer and 0 <= float(layer[1]) <= 1, out


def check_published_teacher(out):
    assert re.search(
        r"^loaded \S+/ckpt_epoch_240\.pth: same logits as saved: True$", out, re.M
    ), out
    for who in ("teacher", "student"):
        accuracy = float(re.search(rf"^{who} test accuracy: ({NUMBER})$", out, re.M)[1])
        assert 0 <= accuracy <= 1


def check_export_student(out):
    rows = re.findall(
        r"^([\w.]+): student\.\w+, \d+ KiB, max \|p - predict_proba\| = (\S+)$",
        out,
        re.M,
    )
    assert {fmt for fmt, _ in rows} >= {"state_dict", "torchscript", "torch.export"}
    for fmt, gap in rows:
        assert float(gap) < 1e-5, fmt  # the exported file predicts as the estimator
    assert re.search(r"^student: [\d.]+x fewer MACs", out, re.M), out


CHECKS = {
    "quickstart": (8, check_quickstart),
    "pipeline": (1, check_pipeline),
    "grid_search": (1, check_grid_search),
    "logit_losses": (1, check_logit_losses),
    "projector_recipes": (1, check_projector_recipes),
    "analysis_plots": (1, check_analysis_plots),
    "huggingface": (1, check_huggingface),
    "published_teacher": (1, check_published_teacher),
    "export_student": (1, check_export_student),
}


def test_every_example_is_checked():
    assert {path.stem for path in EXAMPLES} == set(CHECKS)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_and_prints_sound_numbers(path, tmp_path, monkeypatch, capsys):
    if path.stem == "analysis_plots":
        pytest.importorskip("matplotlib")
    if path.stem == "huggingface":
        pytest.importorskip("transformers")
    epochs, check = CHECKS[path.stem]
    monkeypatch.setenv("PROJKD_EXAMPLE_EPOCHS", str(epochs))
    monkeypatch.chdir(tmp_path)
    # the examples print their tables in a terminal only (the gallery renders them)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    runpy.run_path(str(path), run_name="__main__")
    check(capsys.readouterr().out)
    if path.stem == "analysis_plots":
        assert len(list((tmp_path / "projkd-analysis").glob("*.png"))) == 3
