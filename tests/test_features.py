import numpy as np
import pytest
import torch
from skorch.callbacks import Callback
from torch import nn
from torchvision.models import resnet18

from projkd import ProjectorDistiller
from projkd.features import (
    UnsupportedOutputError,
    feature_width,
    forward_with_features,
    logits_of,
    resolve_feature_layer,
)
from projkd.metrics import cka_scorer
from projkd.models import DigitsCNN

from .conftest import FAST


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
    with pytest.raises(ValueError, match=r"'layer9'.*closest names are layer4"):
        resolve_feature_layer(resnet18(weights=None), "layer9")


def test_network_without_linear_needs_a_layer_name():
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    with pytest.raises(ValueError, match="student_layer"):
        resolve_feature_layer(conv)


def test_feature_width_restores_train_mode():
    model = DigitsCNN(width=4, n_features=6)  # train mode, BatchNorm
    assert feature_width(model, torch.randn(1, 1, 8, 8)) == (6, 10)
    assert all(m.training for m in model.modules())


# ---------------------------------------------------------- structured outputs
class Output:
    """Like a transformers ModelOutput: logits as an attribute."""

    def __init__(self, logits):
        self.logits = logits
        self.hidden_states = None


STRUCTURES = {
    "tensor": lambda z: z,
    "attribute": Output,
    "mapping": lambda z: {"loss": None, "logits": z},
    "tuple": lambda z: (z, z.detach() * 0),
    "list": lambda z: [z],
}


class Structured(nn.Module):
    """A network returning its logits wrapped as ``STRUCTURES[kind]``."""

    def __init__(self, net, kind):
        super().__init__()
        self.net = net
        self.kind = kind

    def forward(self, x):
        wrap = STRUCTURES[self.kind] if isinstance(self.kind, str) else self.kind
        return wrap(self.net(x))


@pytest.mark.parametrize("kind", STRUCTURES)
def test_logits_are_taken_from_every_accepted_output(kind):
    mlp = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    x = torch.randn(5, 4)
    logits, features = forward_with_features(Structured(mlp, kind), x)
    torch.testing.assert_close(logits, mlp(x))
    torch.testing.assert_close(features, mlp[:2](x))
    assert logits_of(STRUCTURES[kind](mlp(x))).shape == (5, 3)


@pytest.mark.parametrize(
    "output, found",
    [
        ("logits", "str"),
        ({"scores": torch.zeros(2, 3)}, r"dict with keys \['scores'\]"),
        ((None, torch.zeros(2, 3)), "tuple whose first element is NoneType"),
        ((), "tuple whose first element is nothing"),
        (Output(logits=[0.1, 0.9]), "Output"),
    ],
    ids=["str", "mapping-without-logits", "tuple-of-none", "empty-tuple", "list"],
)
def test_unsupported_output_names_network_type_and_accepted_forms(output, found):
    with pytest.raises(UnsupportedOutputError, match=f"The teacher returned {found}"):
        logits_of(output, network="teacher")
    with pytest.raises(TypeError, match=r"Accepted: a tensor of logits, .*\.logits"):
        logits_of(output, network="student")


def test_forward_head_output_is_unpacked():
    class Headed(DigitsCNN):
        def forward_head(self, features):
            return {"logits": super().forward_head(features)}

    model = Headed(width=4, n_features=6).eval()
    x = torch.randn(3, 1, 8, 8)
    logits, features = forward_with_features(model, x)
    torch.testing.assert_close(logits, model.fc(model.forward_features(x)))
    assert features.shape == (3, 6)


class PairNet(nn.Module):
    """A conv net whose ``pair`` layer returns ``(activation, extra)``."""

    def __init__(self, first="tensor"):
        super().__init__()
        self.conv = nn.Conv2d(1, 5, 3)
        self.pair = Pair(first)
        self.fc = nn.Linear(5, 2)

    def forward(self, x):
        h = self.conv(x).relu()
        self.pair(h)
        return self.fc(h.mean(dim=(2, 3)))


class Pair(nn.Module):
    def __init__(self, first):
        super().__init__()
        self.first = first

    def forward(self, h):
        return (h if self.first == "tensor" else "no tensor", "state")


def test_named_layer_returning_a_tuple_gives_its_first_tensor():
    model = PairNet()
    x = torch.randn(2, 1, 6, 6)
    _, features = forward_with_features(model, x, layer="pair")
    torch.testing.assert_close(features, model.conv(x).relu().mean(dim=(2, 3)))


def test_named_layer_without_a_tensor_is_a_clear_error():
    with pytest.raises(UnsupportedOutputError, match="student's layer 'pair' returned"):
        forward_with_features(
            PairNet(first="none"),
            torch.randn(2, 1, 6, 6),
            layer="pair",
            network="student",
        )


# ------------------------------------------- structured outputs in the estimator
@pytest.mark.parametrize("cache", [True, False], ids=["cached", "uncached"])
@pytest.mark.parametrize("kind", ["attribute", "mapping", "tuple"])
def test_distiller_trains_and_predicts_with_structured_outputs(
    small_digits, trained_teacher, kind, cache
):
    X, y = small_digits
    torch.manual_seed(0)
    student = Structured(DigitsCNN(width=4, n_features=16), kind)
    est = ProjectorDistiller(
        Structured(trained_teacher, "mapping").eval(),
        student,
        cache_teacher=cache,
        random_state=0,
        **FAST,
    ).fit(X, y)
    assert (est.n_student_features_, est.n_teacher_features_) == (16, 64)
    assert np.isfinite(est.history[-1, "train_feat"])
    proba = est.predict_proba(X[:20])
    with torch.no_grad():
        logits = est.module_.net(torch.as_tensor(X[:20]))
    np.testing.assert_allclose(proba, logits.softmax(dim=1).numpy(), atol=1e-6)
    np.testing.assert_allclose(
        est.predict_proba_teacher(X[:20]),
        trained_teacher(torch.as_tensor(X[:20])).softmax(dim=1).detach().numpy(),
        atol=1e-6,
    )
    assert est.transform_teacher(X[:20]).shape == (20, 64)
    assert 0 <= est.score(X, y) <= 1
    assert np.isfinite(cka_scorer(est, X[:40], y[:40]))


@pytest.mark.parametrize("network", ["teacher", "student"])
def test_distiller_refuses_an_unreadable_output_before_training(small_digits, network):
    X, y = small_digits
    nets = {
        "teacher": DigitsCNN(width=8, n_features=32).eval(),
        "student": DigitsCNN(width=4, n_features=16),
    }
    nets[network] = Structured(nets[network], lambda z: {"scores": z})
    steps = []
    est = ProjectorDistiller(
        nets["teacher"],
        nets["student"],
        callbacks=[("spy", LambdaCallback(lambda: steps.append(1)))],
        **FAST,
    )
    with pytest.raises(UnsupportedOutputError, match=f"The {network} returned dict"):
        est.fit(X, y)
    assert steps == []


class LambdaCallback(Callback):
    def __init__(self, on_batch):
        self.on_batch = on_batch

    def on_batch_begin(self, net, **kwargs):
        self.on_batch()


@pytest.mark.parametrize("tap", [False, True])
def test_the_training_forward_names_the_network_in_its_errors(tap):
    from projkd.training.compiling import FeatureForward

    mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
    mlp.append(torch.nn.Linear(8, 3))
    model = Structured(mlp, lambda z: {"scores": z})
    forward = FeatureForward(model, tap=tap, network="student")
    output, features, _ = forward(torch.zeros(2, 4))  # as the network gave it
    assert set(output) == {"scores"} and features.shape == (2, 8)
    with pytest.raises(UnsupportedOutputError, match="The student returned dict"):
        logits_of(output, network="student")
