"""timm models through get_model("timm:<name>"): features, logits, distillation."""

from __future__ import annotations

import pytest
import torch

from projkd import ProjectorDistiller
from projkd.models import TimmModel, get_model

timm = pytest.importorskip("timm")

# A tiny ViT on 8x8 one-channel digits: four 4x4 patches, two blocks.
TINY_VIT = dict(
    img_size=8, patch_size=4, in_chans=1, embed_dim=16, depth=2, num_heads=2
)


def test_features_are_timms_pre_logits_and_logits_its_head():
    torch.manual_seed(0)
    model = get_model("timm:resnet10t", num_classes=7).eval()
    assert isinstance(model, TimmModel)
    inner = model.model
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = inner.forward_head(inner.forward_features(x), pre_logits=True)
        torch.testing.assert_close(model.forward_features(x), expected)
        torch.testing.assert_close(model(x), inner(x))
    assert model.num_features == expected.shape[1] == 512
    assert model(x).shape == (2, 7)


def test_kwargs_pass_through_and_pretrained_is_off_by_default(monkeypatch):
    seen = {}
    create = timm.create_model

    def spy(name, **kwargs):
        seen.update(kwargs)
        return create(name, **kwargs)

    monkeypatch.setattr(timm, "create_model", spy)
    model = get_model("timm:vit_tiny_patch16_224", num_classes=3, **TINY_VIT)
    assert seen["pretrained"] is False and seen["embed_dim"] == 16
    assert model.num_features == 16
    with pytest.raises(ValueError, match="Unknown timm model 'no_such_net'"):
        get_model("timm:no_such_net")


def test_weights_path_loads_into_the_timm_model(tmp_path):
    source = get_model("timm:vit_tiny_patch16_224", num_classes=3, **TINY_VIT)
    path = tmp_path / "vit.pth"
    torch.save({"state_dict": source.model.state_dict()}, path)
    loaded = get_model(
        "timm:vit_tiny_patch16_224", num_classes=3, weights=path, **TINY_VIT
    )
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(loaded.eval()(x), source.eval()(x))


def test_timm_models_distil_as_teacher_and_student(small_digits):
    X, y = small_digits
    torch.manual_seed(0)
    teacher = get_model("timm:vit_tiny_patch16_224", num_classes=10, **TINY_VIT)
    student = get_model(
        "timm:resnet10t", num_classes=10, in_chans=1, stem_width=8
    ).eval()
    est = ProjectorDistiller(
        teacher.eval(),
        student,
        max_epochs=2,
        batch_size=128,
        lr=0.01,
        verbose=0,
        train_split=None,
        random_state=0,
    ).fit(X, y)
    assert est.n_teacher_features_ == 16 and est.n_student_features_ == 512
    history = est.history
    assert history[-1]["train_feat"] < history[0]["train_feat"]
    proba = est.predict_proba(X[:5])
    assert proba.shape == (5, 10)
    np_features = est.transform(X[:5])
    with torch.no_grad():
        expected = est.module_.forward_features(torch.as_tensor(X[:5]))
    torch.testing.assert_close(torch.as_tensor(np_features), expected)
