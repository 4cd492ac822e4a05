import numpy as np
import pytest
import torch

from projkd import ProjectorDistiller
from projkd.analysis import (
    compare,
    format_markdown,
    layer_cka,
    plot_accuracy_curves,
    plot_cka_heatmap,
    plot_reliability_diagrams,
    to_dataframe,
)
from projkd.metrics import expected_calibration_error, linear_cka
from projkd.models import DigitsCNN

from .conftest import FAST

pytest.importorskip("matplotlib")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fitted(digits, trained_teacher):
    X_train, X_test, y_train, y_test = digits
    ests = {
        f"{k} projectors": ProjectorDistiller(
            trained_teacher,
            DigitsCNN,
            student__width=4,
            student__n_features=64,
            n_projectors=k,
            **{**FAST, "max_epochs": 3, "random_state": 0},
        ).fit(X_train, y_train)
        for k in (0, 2)
    }
    return ests, X_train, y_train, X_test, y_test


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 2000


def test_compare_reports_every_column_consistently(fitted):
    ests, X_train, y_train, X_test, y_test = fitted
    records = compare(ests, X_train, y_train, X_test, y_test)
    assert [r["model"] for r in records] == ["teacher", "0 projectors", "2 projectors"]
    teacher_row, row = records[0], records[2]
    assert teacher_row["cka"] == 1.0 and teacher_row["test_acc"] >= 0.95
    est = ests["2 projectors"]
    assert row["test_acc"] == pytest.approx(est.score(X_test, y_test))
    assert row["train_acc"] == pytest.approx(est.score(X_train, y_train))
    assert row["gap"] == pytest.approx(row["train_acc"] - row["test_acc"])
    assert row["ece"] == pytest.approx(
        expected_calibration_error(y_test, est.predict_proba(X_test))
    )
    assert row["cka"] == pytest.approx(
        linear_cka(est.transform(X_test), est.transform_teacher(X_test))
    )
    table = format_markdown(records)
    assert table.count("\n") == 4 and "| 2 projectors |" in table


def test_to_dataframe(fitted):
    pytest.importorskip("pandas")
    ests, *data = fitted
    frame = to_dataframe(compare(ests, *data))
    assert list(frame.index) == ["teacher", "0 projectors", "2 projectors"]


def test_layer_cka_of_a_network_with_itself_is_one_on_the_diagonal(fitted):
    ests, _, _, X_test, _ = fitted
    student = ests["2 projectors"].module_
    matrix, rows, columns = layer_cka(student, student, X_test[:200], batch_size=50)
    assert rows == columns and len(rows) > 3
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-6)
    assert (matrix <= 1 + 1e-9).all()


def test_layer_cka_restores_train_mode(fitted):
    ests, _, _, X_test, _ = fitted
    student, teacher = ests["0 projectors"].module_, ests["0 projectors"].teacher_
    student.train()
    try:
        layer_cka(student, teacher, X_test[:64], batch_size=32)
        assert all(m.training for m in student.modules())
        assert not any(m.training for m in teacher.modules())
    finally:
        student.eval()


def test_plots_are_written(tmp_path, fitted):
    ests, _, _, X_test, y_test = fitted
    est = ests["2 projectors"]
    assert_png(
        plot_reliability_diagrams(
            {
                "teacher": (y_test, est.predict_proba_teacher(X_test)),
                "student": (y_test, est.predict_proba(X_test)),
            },
            tmp_path / "reliability.png",
        )
    )
    assert_png(
        plot_cka_heatmap(est.module_, est.teacher_, X_test[:128], tmp_path / "cka.png")
    )
    assert_png(
        plot_accuracy_curves(
            {k: e.history for k, e in ests.items()}, tmp_path / "curves.png"
        )
    )


def test_teacher_probabilities_are_a_distribution(fitted):
    ests, _, _, X_test, _ = fitted
    proba = ests["0 projectors"].predict_proba_teacher(X_test)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    with torch.no_grad():
        expected = torch.softmax(
            ests["0 projectors"].teacher_(torch.as_tensor(X_test)), 1
        )
    np.testing.assert_allclose(proba, expected.numpy(), rtol=1e-4, atol=1e-6)


def test_compare_adds_costs_for_teacher_and_students(fitted):
    from projkd.analysis import cost_summary
    from projkd.analysis.cost import count_macs, count_parameters

    ests, X_train, y_train, X_test, y_test = fitted
    assert "macs" not in compare(ests, X_train, y_train, X_test, y_test)[0]
    with pytest.raises(ValueError, match="cost=True"):
        cost_summary(compare(ests, X_train, y_train, X_test, y_test))
    records = compare(ests, X_train, y_train, X_test, y_test, cost=True, cost_repeats=2)
    teacher_row, student_row = records[0], records[2]
    est = ests["2 projectors"]
    shape = X_test.shape[1:]
    assert teacher_row["params"] == count_parameters(est.teacher_)
    assert teacher_row["macs"] == count_macs(est.teacher_, shape)
    assert student_row["macs"] == count_macs(est.module_, shape)
    assert student_row["macs"] < teacher_row["macs"]
    for row in records:
        assert row["latency_ms"] > 0 and row["batch_size"] == 1
        assert row["device"] == "cpu"
    table = format_markdown(records)
    assert "| MACs (M) |" in table and "Speed measured at batch 1 on cpu" in table
    lines = cost_summary(records).splitlines()
    assert len(lines) == 2 and lines[1].startswith("2 projectors: ")
    ratio = teacher_row["macs"] / student_row["macs"]
    assert f"{ratio:.1f}x fewer MACs" in lines[1]
    points = 100 * (student_row["test_acc"] - teacher_row["test_acc"])
    assert lines[1].endswith(f"{points:+.1f} points")
