"""
Hugging Face image classifiers as teacher and student
=====================================================

A tiny ViT built from a config (nothing is downloaded) is trained on the 8x8
digits, then distilled into a small CNN and into a tiny Hugging Face ConvNeXt.
The models return ``ImageClassifierOutput`` objects; projkd reads their
``.logits``, feeds the array ``X`` as ``pixel_values`` and finds the features
itself: the CLS token the ViT's classifier sees, the ConvNeXt's pooled feature.
With a real checkpoint the teacher would be, e.g.,
``ViTForImageClassification.from_pretrained("google/vit-base-patch16-224")``.

Run: ``pip install "projkd[hf]" && python examples/huggingface.py``
"""

import os

import torch
from sklearn.model_selection import train_test_split
from transformers import (
    ConvNextConfig,
    ConvNextForImageClassification,
    ViTConfig,
    ViTForImageClassification,
)

from projkd import ProjectorDistiller
from projkd.data import load_digits
from projkd.models import DigitsCNN
from projkd.teacher import train_teacher

EPOCHS = int(os.environ.get("PROJKD_EXAMPLE_EPOCHS", 10))
TRAIN = dict(optimizer=torch.optim.Adam, lr=3e-3, batch_size=64, random_state=0)

X, y = load_digits()  # (1797, 1, 8, 8) float32: the pixel_values
X_train, X_test, y_train, y_test = train_test_split(X, y, stratify=y, random_state=0)

# The teacher: a one-block ViT with 2x2 = 4 patches of 4x4 pixels.
vit_config = ViTConfig(
    image_size=8,
    patch_size=4,
    num_channels=1,
    hidden_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=128,
    num_labels=10,
)
teacher = train_teacher(
    ViTForImageClassification(vit_config), X_train, y_train, max_epochs=EPOCHS, **TRAIN
)

students = {
    # a CNN student: 32 features, projected to the teacher's 64
    "ViT -> CNN": dict(student=DigitsCNN, student__width=8, student__n_features=32),
    # a Hugging Face student: a class and its config, as student__config
    "ViT -> ConvNeXt": dict(
        student=ConvNextForImageClassification,
        student__config=ConvNextConfig(
            num_channels=1,
            patch_size=2,
            num_stages=2,
            hidden_sizes=[16, 32],
            depths=[1, 1],
            num_labels=10,
        ),
    ),
}
for name, params in students.items():
    est = ProjectorDistiller(
        teacher,
        n_projectors=3,
        max_epochs=EPOCHS,
        train_split=None,
        verbose=0,
        **TRAIN,
        **params,
    ).fit(X_train, y_train)
    print(
        f"{name}: features {est.n_student_features_} -> {est.n_teacher_features_}, "
        f"test accuracy {est.score(X_test, y_test):.3f}"
    )

# Another feature than the automatic guess: name a module of the teacher,
# here the final LayerNorm (its tokens are averaged).
est = ProjectorDistiller(
    teacher,
    DigitsCNN,
    teacher_layer="vit.layernorm",
    max_epochs=EPOCHS,
    train_split=None,
    verbose=0,
    **TRAIN,
).fit(X_train, y_train)
print(f"teacher_layer='vit.layernorm': test accuracy {est.score(X_test, y_test):.3f}")
