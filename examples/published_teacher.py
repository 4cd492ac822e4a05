"""
Starting from a published teacher checkpoint
============================================

Distillation usually starts from a teacher someone has already trained. The
CIFAR-100 benchmark's teachers are published by RepDistiller (and
redistributed by mdistiller) as ``<arch>_vanilla/ckpt_epoch_240.pth``: a
training checkpoint ``{"epoch", "model", "accuracy", "optimizer"}`` saved from
CUDA, whose module names projkd's zoo shares. With such a file,

.. code-block:: python

   teacher = get_model("resnet32x4", num_classes=100,
                       weights="resnet32x4_vanilla/ckpt_epoch_240.pth").eval()

No weights can be downloaded here, so this example makes a small stand-in:
it trains a digits teacher, saves it the way the reference training script
saves its checkpoints (with DataParallel's ``module.`` prefix), loads it back
through ``get_model(..., weights=path)`` and distils it. Files are read with
``torch.load(weights_only=True)``: a checkpoint carrying pickled code is
refused and its code never runs.

Run: ``python examples/published_teacher.py``
"""

import os
import tempfile
from pathlib import Path

import torch
from sklearn.model_selection import train_test_split

from projkd import ProjectorDistiller
from projkd.data import load_digits
from projkd.models import DigitsCNN, get_model
from projkd.teacher import train_teacher

EPOCHS = int(os.environ.get("PROJKD_EXAMPLE_EPOCHS", 15))

X, y = load_digits()
X_train, X_test, y_train, y_test = train_test_split(X, y, stratify=y, random_state=0)

# %%
# The stand-in for a published checkpoint, saved as the reference code does.
torch.manual_seed(0)
trained = train_teacher(
    get_model("digits_teacher"),
    X_train,
    y_train,
    max_epochs=EPOCHS,
    optimizer=torch.optim.Adam,
    lr=3e-3,
    random_state=0,
)
checkpoint = Path(tempfile.mkdtemp()) / "digits_teacher_vanilla" / "ckpt_epoch_240.pth"
checkpoint.parent.mkdir()
torch.save(
    {
        "epoch": 240,
        "model": {f"module.{k}": v for k, v in trained.state_dict().items()},
        "accuracy": 100
        * float(
            (trained(torch.as_tensor(X_test)).argmax(1) == torch.as_tensor(y_test))
            .float()
            .mean()
        ),
        "optimizer": {"state": {}, "param_groups": []},
    },
    checkpoint,
)

# %%
# One line loads it: the weights are found under ``"model"``, the prefix is
# removed, and a mismatch would name the missing and unexpected keys.
teacher = get_model("digits_teacher", weights=checkpoint).eval()
with torch.no_grad():
    same = torch.equal(
        teacher(torch.as_tensor(X_test)), trained(torch.as_tensor(X_test))
    )
print(
    f"loaded {checkpoint.parent.name}/{checkpoint.name}: same logits as saved: {same}"
)

# %%
# Distil it as any teacher.
student = ProjectorDistiller(
    teacher,
    DigitsCNN,
    student__width=4,
    student__n_features=32,
    n_projectors=3,
    optimizer=torch.optim.Adam,
    lr=3e-3,
    max_epochs=EPOCHS,
    train_split=None,
    verbose=0,
    random_state=0,
).fit(X_train, y_train)
teacher_accuracy = float(
    (teacher(torch.as_tensor(X_test)).argmax(1) == torch.as_tensor(y_test))
    .float()
    .mean()
)
print(f"teacher test accuracy: {teacher_accuracy:.3f}")
print(f"student test accuracy: {student.score(X_test, y_test):.3f}")
