"""Export the student: each format predicts what the estimator predicts."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from projkd import ProjectorDistiller
from projkd.export import FORMATS, export_student, load_student
from projkd.models import get_model

from .conftest import FAST


@pytest.fixture(scope="module")
def fitted(digits):
    X_train, X_test, y_train, _ = digits
    torch.manual_seed(0)
    teacher = get_model("digits_teacher", num_classes=10).eval()
    student = get_model("digits_student", num_classes=10, n_features=32)
    # String labels: the sidecar must say what output i means.
    labels = np.array([f"digit {d}" for d in range(10)])
    est = ProjectorDistiller(
        teacher, student, **{**FAST, "random_state": 0, "max_epochs": 1}
    ).fit(X_train[:300], labels[y_train[:300]])
    return est, X_test[:64]


def _softmax(logits) -> np.ndarray:
    return torch.softmax(torch.as_tensor(np.asarray(logits)), dim=-1).numpy()


def test_state_dict_with_sidecar_reloads_through_get_model(fitted, tmp_path):
    est, X = fitted
    path = export_student(est, tmp_path / "student.pt")
    meta = json.loads((tmp_path / "student.json").read_text())
    assert meta["arch"] == "digits_student" and meta["num_classes"] == 10
    assert meta["kwargs"] == {"n_features": 32}
    assert meta["classes"] == list(est.classes_)
    state = torch.load(path, weights_only=True)
    # The student only: no teacher, no projectors.
    assert set(state) == set(est.module_.state_dict())
    by_name = get_model("digits_student", num_classes=10, n_features=32, weights=path)
    for model in (by_name.eval(), load_student(path)):
        with torch.no_grad():
            logits = model(torch.as_tensor(X))
        np.testing.assert_allclose(_softmax(logits), est.predict_proba(X), atol=1e-6)


@pytest.mark.parametrize("format", [f for f in FORMATS if f != "state_dict"])
@pytest.mark.parametrize("output", ["logits", "proba"])
def test_exported_graph_predicts_like_the_estimator(fitted, tmp_path, format, output):
    est, X = fitted
    if format == "onnx":
        pytest.importorskip("onnx")
        pytest.importorskip("onnxscript")
        ort = pytest.importorskip("onnxruntime")
    training = est.module_.training
    path = tmp_path / f"student.{format}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit / onnx deprecation chatter
        export_student(est, path, format, output=output)
    assert est.module_.training == training  # the estimator is left as it was
    if format == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            out = torch.jit.load(str(path))(torch.as_tensor(X)).numpy()
    elif format == "torch.export":
        program = torch.export.load(path)
        with torch.no_grad():
            out = program.module()(torch.as_tensor(X)).numpy()
    else:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (out,) = session.run(None, {session.get_inputs()[0].name: X})
    proba = out if output == "proba" else _softmax(out)
    # A batch size other than the one traced with works too.
    assert proba.shape == (len(X), 10)
    np.testing.assert_allclose(proba, est.predict_proba(X), atol=1e-5)


def test_bad_arguments_are_named(fitted, tmp_path):
    est, _ = fitted
    with pytest.raises(ValueError, match="format must be one of"):
        export_student(est, tmp_path / "s.pt", "tflite")
    with pytest.raises(ValueError, match="output must be one of"):
        export_student(est, tmp_path / "s.pt", "torchscript", output="labels")
    unfitted = ProjectorDistiller(est.teacher, get_model("digits_student"))
    with pytest.raises(ValueError, match="needs a fitted distiller"):
        export_student(unfitted, tmp_path / "s.pt")


def test_load_student_without_registry_arch(fitted, tmp_path):
    est, _ = fitted
    path = tmp_path / "student.pt"
    export_student(est, path)
    meta = json.loads((tmp_path / "student.json").read_text())
    (tmp_path / "student.json").write_text(json.dumps({**meta, "arch": None}))
    with pytest.raises(ValueError, match="names no registry architecture"):
        load_student(path)
    (tmp_path / "student.json").unlink()
    with pytest.raises(ValueError, match="No sidecar"):
        load_student(path)


def test_timm_student_exports_in_timms_layout(tmp_path, small_digits):
    pytest.importorskip("timm")
    X, y = small_digits
    student = get_model("timm:resnet10t", num_classes=10, in_chans=1, stem_width=8)
    est = ProjectorDistiller(
        get_model("digits_teacher").eval(), student, **{**FAST, "max_epochs": 1}
    ).fit(X, y)
    path = export_student(est, tmp_path / "student.pt")
    reloaded = load_student(path)
    with torch.no_grad():
        logits = reloaded(torch.as_tensor(X[:8]))
    np.testing.assert_allclose(_softmax(logits), est.predict_proba(X[:8]), atol=1e-6)
