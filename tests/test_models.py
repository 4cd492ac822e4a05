"""The CIFAR-100 zoo: published sizes, the features interface, one training step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from projkd.models import (
    VGG,
    MobileNetV2,
    ShuffleNetV2,
    WideResNet,
    get_model,
    list_models,
)
from projkd.models.cifar_resnet import BasicBlock, CifarResNet, _basic_resnet

# Parameters (millions, 100 classes) and penultimate width, from the CRD
# benchmark's published table (see METHOD.md, "Model zoo").
ZOO = {
    "resnet8": (0.08, 64),
    "resnet14": (0.18, 64),
    "resnet20": (0.28, 64),
    "resnet32": (0.47, 64),
    "resnet44": (0.67, 64),
    "resnet56": (0.86, 64),
    "resnet110": (1.74, 64),
    "resnet8x4": (1.23, 256),
    "resnet32x4": (7.43, 256),
    "wrn_16_1": (0.18, 64),
    "wrn_16_2": (0.70, 128),
    "wrn_40_1": (0.57, 64),
    "wrn_40_2": (2.26, 128),
    "vgg8": (3.97, 512),
    "vgg11": (9.28, 512),
    "vgg13": (9.46, 512),
    "vgg16": (14.77, 512),
    "vgg19": (20.09, 512),
    "mobilenetv2": (0.81, 1280),
    "shufflenetv1": (0.95, 960),
    "shufflenetv2": (1.36, 1024),
    "resnet50": (23.71, 2048),
}
NAMES = list(ZOO)


def n_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def batch():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module", params=NAMES)
def zoo_model(request):
    """Each zoo model at 100 classes, built once, in eval mode."""
    torch.manual_seed(0)
    return request.param, get_model(request.param).eval()


def test_parameter_count_matches_published_table(zoo_model):
    name, model = zoo_model
    assert round(n_parameters(model) / 1e6, 2) == ZOO[name][0]


def test_num_features_is_the_penultimate_width(zoo_model):
    name, model = zoo_model
    assert model.num_features == ZOO[name][1]


@torch.no_grad()
def test_features_and_logits(zoo_model, batch):
    name, model = zoo_model
    features = model.forward_features(batch)
    logits = model(batch)
    assert features.shape == (2, ZOO[name][1])
    assert logits.shape == (2, 100)
    # Features are taken after the last ReLU, and not all of them are dead.
    assert (features >= 0).all()
    assert (features > 0).any()
    torch.testing.assert_close(model.forward_head(features), logits)


def test_features_feed_the_last_linear_layer(zoo_model):
    """forward_head is the network's final nn.Linear on the features."""
    _, model = zoo_model
    last_linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert last_linear.in_features == model.num_features
    features = torch.rand(3, model.num_features)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(features), last_linear(features))


@pytest.mark.parametrize("name", NAMES)
def test_one_sgd_step_trains(name, batch):
    torch.manual_seed(0)
    model = get_model(name).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    loss = F.cross_entropy(model(batch), torch.tensor([3, 7]))
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    after = model.parameters()
    changed = [not torch.equal(b, a) for b, a in zip(before, after, strict=True)]
    # The stem, the classifier and most layers between them receive gradients.
    assert changed[0] and changed[-1]
    assert sum(changed) > 0.9 * len(changed)


@pytest.mark.parametrize("name", NAMES)
def test_get_model_sets_num_classes(name):
    model = get_model(name, num_classes=10)
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_list_models_contains_the_zoo():
    assert set(NAMES) <= set(list_models())


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("ResNet50", "resnet50"),
        ("MobileNetV2", "mobilenetv2"),
        ("ShuffleV1", "shufflenetv1"),
        ("ShuffleV2", "shufflenetv2"),
        ("vgg13_bn", "vgg13"),
    ],
)
def test_reference_spellings_are_aliases(alias, name):
    """The reference code's names build the same architecture."""
    built, expected = get_model(alias, num_classes=10), get_model(name, num_classes=10)
    assert type(built) is type(expected)
    shapes = {k: v.shape for k, v in built.state_dict().items()}
    assert shapes == {k: v.shape for k, v in expected.state_dict().items()}


def test_unknown_name_suggests_close_names():
    with pytest.raises(ValueError, match="Did you mean 'resnet8'"):
        get_model("resnet9")
    with pytest.raises(ValueError, match="Did you mean 'wrn_40_2'"):
        get_model("wrn_40_3")


def test_factories_pass_architecture_arguments():
    wrn = get_model("wrn_16_2", num_classes=10, drop_rate=0.3)
    assert isinstance(wrn, WideResNet)
    stages = (wrn.block1, wrn.block2, wrn.block3)
    assert all(block.drop_rate == 0.3 for stage in stages for block in stage.layer)
    assert get_model("mobilenetv2", width_mult=1.0).num_features == 1280
    assert get_model("mobilenetv2", width_mult=1.5).num_features == 1920
    plain = get_model("vgg8", batch_norm=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())


def test_wide_resnet_shortcuts_only_where_shape_changes():
    """wrn_16_1's first stage keeps 16 channels: identity shortcuts there."""
    wrn = get_model("wrn_16_1")
    first, second = wrn.block1.layer, wrn.block2.layer
    assert all(block.convShortcut is None for block in first)
    assert second[0].convShortcut is not None
    assert all(block.convShortcut is None for block in second[1:])


def test_resnet_feature_map_sizes(batch):
    """CIFAR form: the stem keeps 32x32, stages run at 32, 16 and 8."""
    net = get_model("resnet20").eval()
    sizes = []
    x = net.relu(net.bn1(net.conv1(batch)))
    assert x.shape[-1] == 32
    for stage in net.stages():
        x = stage(x)
        sizes.append(x.shape[-1])
    assert sizes == [32, 16, 8]


def test_init_matches_the_reference():
    """He-normal (fan-out) convolutions, BatchNorm at weight 1 and bias 0."""
    torch.manual_seed(0)
    net = get_model("resnet32x4")
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    conv = max(convs, key=lambda m: m.weight.numel())
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert conv.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.02)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert (m.weight == 1).all() and (m.bias == 0).all()


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: WideResNet(depth=18), "6n \\+ 4"),
        (lambda: VGG(depth=12), "depth must be one of"),
        (lambda: ShuffleNetV2(width_mult=0.75), "width_mult must be one of"),
        (lambda: MobileNetV2(width_mult=0), "width_mult must be positive"),
        (lambda: _basic_resnet(9, (16, 16, 32, 64), 100), "6n \\+ 2"),
        (lambda: CifarResNet(BasicBlock, [1, 1], [16, 32, 64]), "one entry per"),
    ],
)
def test_invalid_architectures_raise(build, match):
    with pytest.raises(ValueError, match=match):
        build()
