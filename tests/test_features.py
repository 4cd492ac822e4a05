import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from projkd.features import feature_width, forward_with_features, resolve_feature_layer
from projkd.models import DigitsCNN


def test_torchvision_resnet18_features_are_the_pooled_last_block():
    model = resnet18(weights=None, num_classes=7).eval()
    x = torch.randn(2, 3, 64, 64)
    logits, features = forward_with_features(model, x)
    with torch.no_grad():
        trunk = nn.Sequential(*list(model.children())[:-1])  # everything but fc
        expected = torch.flatten(trunk(x), 1)
    assert features.shape == (2, 512)
    torch.testing.assert_close(features, expected)
    torch.testing.assert_close(logits, model.fc(expected))


def test_mlp_features_are_the_input_of_the_last_linear():
    mlp = nn.Sequential(
        nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, 9), nn.ReLU(), nn.Linear(9, 3)
    )
    x = torch.randn(4, 5)
    logits, features = forward_with_features(mlp, x)
    torch.testing.assert_close(features, mlp[:4](x))
    torch.testing.assert_close(logits, mlp(x))


def test_forward_features_api_is_preferred_over_hooks():
    model = DigitsCNN(width=4, n_features=6).eval()
    x = torch.randn(3, 1, 8, 8)
    _, features = forward_with_features(model, x)
    torch.testing.assert_close(features, model.forward_features(x))


def test_named_layer_output_is_average_pooled():
    model = resnet18(weights=None, num_classes=4).eval()
    x = torch.randn(2, 3, 32, 32)
    _, features = forward_with_features(model, x, layer="layer3")
    with torch.no_grad():
        h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        expected = model.layer3(model.layer2(model.layer1(h))).mean(dim=(2, 3))
    assert features.shape == (2, 256)
    torch.testing.assert_close(features, expected)


def test_hooks_are_removed_after_the_call():
    mlp = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    forward_with_features(mlp, torch.randn(2, 3))
    assert all(not m._forward_hooks for m in mlp.modules())


def test_unknown_layer_names_the_layer_and_lists_candidates():
    with pytest.raises(ValueError, match=r"'layer9'.*fc"):
        resolve_feature_layer(resnet18(weights=None), "layer9")


def test_network_without_linear_needs_a_layer_name():
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    with pytest.raises(ValueError, match="student_layer"):
        resolve_feature_layer(conv)


def test_feature_width_restores_train_mode():
    model = DigitsCNN(width=4, n_features=6)  # train mode, BatchNorm
    assert feature_width(model, torch.randn(1, 1, 8, 8)) == (6, 10)
    assert all(m.training for m in model.modules())
