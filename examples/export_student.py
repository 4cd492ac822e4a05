"""
Shipping the student: its cost and its export
=============================================

After "how accurate" comes "how much cheaper, and how do I ship it". This
example distils a digits student, compares its parameters, multiply-
accumulates per image and measured speed with the teacher's
(``compare(..., cost=True)``), then exports the student alone (never the
teacher or the projectors) in every format available and checks that each
file predicts what the estimator predicts.

Run: ``python examples/export_student.py`` (ONNX needs
``pip install 'projkd[onnx]'``)
"""

import functools
import importlib.util
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from projkd import ProjectorDistiller
from projkd.analysis import MarkdownTable, compare, cost_summary, format_markdown
from projkd.data import load_digits
from projkd.export import export_student, load_student
from projkd.models import digits_teacher, get_model
from projkd.teacher import train_teacher

EPOCHS = int(os.environ.get("PROJKD_EXAMPLE_EPOCHS", 15))

X, y = load_digits()
X_train, X_test, y_train, y_test = train_test_split(X, y, stratify=y, random_state=0)
torch.manual_seed(0)
teacher = train_teacher(
    digits_teacher(),
    X_train,
    y_train,
    max_epochs=EPOCHS,
    optimizer=torch.optim.Adam,
    lr=3e-3,
    random_state=0,
)
est = ProjectorDistiller(
    teacher,
    functools.partial(get_model, "digits_student"),  # the export records the name
    n_projectors=3,
    optimizer=torch.optim.Adam,
    lr=3e-3,
    max_epochs=EPOCHS,
    train_split=None,
    verbose=0,
    random_state=0,
).fit(X_train, y_train)

# %%
# What the student costs beside the teacher: parameters, multiply-accumulates
# per image (FLOPs / 2, counted by torch's FlopCounterMode) and the median
# latency and throughput measured on this machine at batch size 1.
records = compare({"student": est}, X_train, y_train, X_test, y_test, cost=True)
print(cost_summary(records))
table = MarkdownTable(format_markdown(records))
if sys.stdout.isatty():  # a terminal: the printed form; the gallery renders it
    print(table)
table  # noqa: B018  (sphinx-gallery renders a cell's last expression)

# %%
# Export the student in each format this installation supports, reload each
# file and compare its predictions with the estimator's.
formats = {"state_dict": ".pt", "torchscript": ".ts", "torch.export": ".pt2"}
if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnxscript"):
    formats["onnx"] = ".onnx"
out = Path(tempfile.mkdtemp())
# TorchScript still works in this torch, which announces its deprecation
warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
expected = est.predict_proba(X_test)
x = torch.as_tensor(X_test)
for fmt, suffix in formats.items():
    path = export_student(est, out / f"student{suffix}", fmt, output="proba")
    if fmt == "state_dict":
        with torch.no_grad():
            proba = torch.softmax(load_student(path)(x), dim=1).numpy()
    elif fmt == "torchscript":
        with torch.no_grad():
            proba = torch.jit.load(path)(x).numpy()
    elif fmt == "torch.export":
        with torch.no_grad():
            proba = torch.export.load(path).module()(x).numpy()
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path))
        proba = session.run(None, {session.get_inputs()[0].name: X_test})[0]
    gap = float(np.abs(proba - expected).max())
    size = path.stat().st_size / 1024
    print(f"{fmt}: {path.name}, {size:.0f} KiB, max |p - predict_proba| = {gap:.1e}")
