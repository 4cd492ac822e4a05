"""Hugging Face ``transformers`` image classifiers as teacher and student.

Tiny models built from configs (nothing downloaded), trained for a few epochs
on the 8x8 digits: ``pixel_values`` are the array ``X``.
"""

import numpy as np
import pytest
import torch

from projkd import ProjectorDistiller
from projkd.analysis import layer_cka
from projkd.features import forward_with_features
from projkd.models import DigitsCNN
from projkd.teacher import train_teacher

transformers = pytest.importorskip("transformers")

TRAIN = dict(optimizer=torch.optim.Adam, lr=3e-3, batch_size=64, random_state=0)


def vit_config(hidden=64):
    return transformers.ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=1,
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        num_labels=10,
    )


def convnext():
    config = transformers.ConvNextConfig(
        num_channels=1,
        patch_size=2,
        num_stages=2,
        hidden_sizes=[16, 32],
        depths=[1, 1],
        num_labels=10,
    )
    return transformers.ConvNextForImageClassification(config)


def resnet():
    config = transformers.ResNetConfig(
        num_channels=1,
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        num_labels=10,
    )
    return transformers.ResNetForImageClassification(config)


def vit(hidden=64):
    return transformers.ViTForImageClassification(vit_config(hidden))


def first_block(model):
    """The first transformer block's name: ``vit.layers.0`` in transformers 5,
    ``vit.encoder.layer.0`` before."""
    return next(n for n, m in model.named_modules() if type(m).__name__ == "ViTLayer")


@pytest.fixture(scope="module")
def vit_teacher(digits):
    X_train, _, y_train, _ = digits
    return train_teacher(vit(), X_train, y_train, max_epochs=5, **TRAIN)


@pytest.fixture(scope="module")
def convnext_teacher(digits):
    X_train, _, y_train, _ = digits
    return train_teacher(convnext(), X_train, y_train, max_epochs=5, **TRAIN)


@pytest.fixture
def x():
    return torch.randn(3, 1, 8, 8)


# ------------------------------------------------------------- features found
def test_vit_features_are_the_cls_token_the_classifier_sees(x):
    model = vit().eval()
    logits, features = forward_with_features(model, x)
    with torch.no_grad():
        cls = model.vit(x).last_hidden_state[:, 0]
        expected = model(x).logits
    assert features.shape == (3, 64)
    torch.testing.assert_close(features, cls)
    torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize("build, trunk", [(convnext, "convnext"), (resnet, "resnet")])
def test_cnn_features_are_the_pooled_feature(x, build, trunk):
    model = build().eval()
    logits, features = forward_with_features(model, x)
    with torch.no_grad():
        pooled = getattr(model, trunk)(x).pooler_output.flatten(1)
        expected = model(x).logits
    assert features.shape == (3, model.config.hidden_sizes[-1])
    torch.testing.assert_close(features, pooled)
    torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize("layer", ["vit.layernorm", "block", "vit"])
def test_named_vit_layer_is_averaged_over_its_tokens(x, layer):
    model = vit().eval()
    name = first_block(model) if layer == "block" else layer
    _, features = forward_with_features(model, x, layer=name)
    with torch.no_grad():
        hidden = model.vit(x, output_hidden_states=True)
    tokens = {
        "vit.layernorm": hidden.last_hidden_state,
        "block": hidden.hidden_states[1],
        "vit": hidden.last_hidden_state,  # a ModelOutput: its first tensor
    }[layer]
    torch.testing.assert_close(features, tokens.mean(dim=1))


def test_named_convnext_stage_is_averaged_over_space(x):
    model = convnext().eval()
    _, features = forward_with_features(model, x, layer="convnext.encoder.stages.0")
    with torch.no_grad():
        hidden = model.convnext(x, output_hidden_states=True).hidden_states[1]
    assert features.shape == (3, 16)
    torch.testing.assert_close(features, hidden.mean(dim=(2, 3)))


# ---------------------------------------------------------------- distillation
def test_vit_teacher_distils_into_a_cnn_student(digits, vit_teacher):
    X_train, X_test, y_train, y_test = digits
    est = ProjectorDistiller(
        vit_teacher,
        DigitsCNN,
        student__width=8,
        student__n_features=32,
        n_projectors=3,
        max_epochs=5,
        train_split=None,
        verbose=0,
        **TRAIN,
    ).fit(X_train, y_train)
    assert (est.n_student_features_, est.n_teacher_features_) == (32, 64)
    assert len(est.projectors_) == 3
    assert est.score(X_test, y_test) > 0.6  # chance: 0.1; measured 0.88
    with torch.no_grad():
        cls = vit_teacher.vit(torch.as_tensor(X_test[:8])).last_hidden_state[:, 0]
    np.testing.assert_allclose(est.transform_teacher(X_test[:8]), cls, atol=1e-5)
    teacher_proba = est.predict_proba_teacher(X_test)
    assert (teacher_proba.argmax(1) == y_test).mean() > 0.6  # measured 0.87


def test_convnext_teacher_distils_into_a_vit_student(digits, convnext_teacher):
    X_train, X_test, y_train, y_test = digits
    est = ProjectorDistiller(
        convnext_teacher,
        transformers.ViTForImageClassification,
        student__config=vit_config(hidden=32),
        n_projectors=3,
        max_epochs=5,
        train_split=None,
        verbose=0,
        **TRAIN,
    ).fit(X_train, y_train)
    assert isinstance(est.module_, transformers.ViTForImageClassification)
    assert (est.n_student_features_, est.n_teacher_features_) == (32, 32)
    proba = est.predict_proba(X_test)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    assert (est.predict(X_test) == proba.argmax(1)).all()
    assert est.score(X_test, y_test) > 0.5  # chance: 0.1; measured 0.78
    assert np.isfinite(est.history[-1, "train_feat"])


def test_named_layers_are_used_for_training(digits, vit_teacher):
    X_train, X_test, y_train, _ = digits
    est = ProjectorDistiller(
        vit_teacher,
        transformers.ViTForImageClassification,
        student__config=vit_config(hidden=32),
        teacher_layer=first_block(vit_teacher),
        student_layer="vit.layernorm",
        max_epochs=1,
        train_split=None,
        verbose=0,
        **TRAIN,
    ).fit(X_train[:200], y_train[:200])
    X = torch.as_tensor(X_test[:8])
    with torch.no_grad():
        tokens = vit_teacher.vit(X, output_hidden_states=True).hidden_states[1]
        student_tokens = est.module_.vit(X).last_hidden_state
    np.testing.assert_allclose(est.transform_teacher(X), tokens.mean(1), atol=1e-5)
    np.testing.assert_allclose(est.transform(X), student_tokens.mean(1), atol=1e-5)


def test_layer_cka_reads_hugging_face_blocks(digits, vit_teacher):
    X = digits[1][:64]
    student = convnext().eval()
    cka, student_layers, teacher_layers = layer_cka(
        student,
        vit_teacher,
        X,
        student_layers=["convnext.embeddings", "convnext.encoder.stages.1"],
        teacher_layers=["vit.embeddings", first_block(vit_teacher), "vit"],
    )
    assert cka.shape == (2, 3)
    assert np.isfinite(cka).all() and (cka >= 0).all() and (cka <= 1 + 1e-6).all()
    # each block against itself is 1, and the blocks are told apart
    layers = ["vit.embeddings", first_block(vit_teacher), "vit"]
    itself, _, _ = layer_cka(
        vit_teacher, vit_teacher, X, student_layers=layers, teacher_layers=layers
    )
    np.testing.assert_allclose(np.diag(itself), 1.0, atol=1e-5)
    assert itself[0, 2] < 0.99


def test_pixel_values_of_another_size_name_the_network(digits):
    X_train, _, y_train, _ = digits
    X = np.repeat(np.repeat(X_train[:20], 2, axis=2), 2, axis=3)  # 16x16 images
    est = ProjectorDistiller(vit().eval(), DigitsCNN, max_epochs=1, verbose=0)
    with pytest.raises(
        ValueError,
        match=r"teacher \(ViTForImageClassification\) cannot take samples of shape "
        r"\(1, 16, 16\)",
    ):
        est.fit(X, y_train[:20])


def test_layer_cka_default_layers_of_a_vit_are_its_blocks(digits, vit_teacher):
    X = digits[1][:32]
    cka, _, teacher_layers = layer_cka(DigitsCNN(width=4).eval(), vit_teacher, X)
    assert first_block(vit_teacher) in teacher_layers
    assert np.isfinite(cka).all()
