"""Published checkpoints: the reference layout loads, safely, with equal logits.

The reference networks (RepDistiller's ``models/``) are vendored under
``tests/reference``. For every zoo architecture a checkpoint is built from
hand-made weights in the reference network, saved as the reference training
script saves it, loaded through ``get_model(..., weights=path)``, and must give
the reference network's logits and penultimate features.
"""

from __future__ import annotations

import argparse
import pickle

import pytest
import torch
from torch import nn

from projkd.models import get_model, load_weights, read_state_dict
from projkd.teacher import load_teacher, save_teacher

from .reference import MODEL_DICT, PROJKD_NAMES

N_CLASSES = 10


def _hand_made_weights(model: nn.Module, seed: int) -> None:
    """Overwrite every parameter and buffer with seeded values of sane scale.

    BatchNorm gets non-trivial affine parameters and running statistics, so a
    layer wired to the wrong statistics or in the wrong order shows.
    """
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.weight.data = 0.5 + torch.rand(c, generator=gen)
            module.bias.data = 0.2 * torch.randn(c, generator=gen)
            module.running_mean.data = 0.2 * torch.randn(c, generator=gen)
            module.running_var.data = 0.5 + torch.rand(c, generator=gen)
            module.num_batches_tracked.data = torch.tensor(1000)
        elif isinstance(module, nn.Conv2d | nn.Linear):
            fan_in = module.weight[0].numel()
            module.weight.data = (
                torch.randn(module.weight.shape, generator=gen) * (2 / fan_in) ** 0.5
            )
            if module.bias is not None:
                module.bias.data = 0.1 * torch.randn(module.bias.shape, generator=gen)


def _reference_checkpoint(model: nn.Module, path, *, epoch: int = 240) -> None:
    """Save as RepDistiller's train_teacher.py does (one SGD step taken, so the
    optimizer state holds momentum buffers like a real one)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model(torch.zeros(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    state = {
        "epoch": epoch,
        "model": model.state_dict(),
        "accuracy": torch.tensor(75.61),
        "optimizer": optimizer.state_dict(),
    }
    torch.save(state, path)


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("ref_name", list(MODEL_DICT))
def test_reference_checkpoint_loads_with_equal_logits(ref_name, images, tmp_path):
    torch.manual_seed(0)
    reference = MODEL_DICT[ref_name](num_classes=N_CLASSES)
    path = tmp_path / "ckpt_epoch_240.pth"
    _reference_checkpoint(reference, path)
    _hand_made_weights(reference, seed=len(ref_name))
    torch.save(
        {**torch.load(path, weights_only=True), "model": reference.state_dict()}, path
    )
    reference.eval()

    # Reference spelling and projkd's registry name load the same file.
    for name in {ref_name, PROJKD_NAMES[ref_name]}:
        model = get_model(name, num_classes=N_CLASSES, weights=path).eval()
        with torch.no_grad():
            feats, logits = reference(images, is_feat=True)
            torch.testing.assert_close(model(images), logits, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(
                model.forward_features(images), feats[-1], rtol=1e-4, atol=1e-5
            )

    # And back: projkd's state_dict loads into the reference code (strict).
    fresh = MODEL_DICT[ref_name](num_classes=N_CLASSES).eval()
    fresh.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh(images), logits, rtol=1e-4, atol=1e-5)


def test_checkpoint_layouts(tmp_path):
    """Plain, "model"/"state_dict"/"net" dicts, DataParallel prefixes."""
    net = get_model("resnet8", num_classes=N_CLASSES)
    _hand_made_weights(net, seed=3)
    state = net.state_dict()
    prefixed = {f"module.{k}": v for k, v in state.items()}
    layouts = {
        "plain": state,
        "model": {"epoch": 1, "model": state, "accuracy": 50.0},
        "state_dict": {"state_dict": prefixed, "arch": "resnet8"},
        "net": {"net": state, "acc": 0.5},
        "ddp": prefixed,
        # RepDistiller's <arch>_last.pth: the argparse options beside the weights
        "last": {"opt": argparse.Namespace(model="resnet8", lr=0.05), "model": state},
    }
    x = torch.randn(2, 3, 32, 32)
    for layout, obj in layouts.items():
        path = tmp_path / f"{layout}.pth"
        torch.save(obj, path)
        loaded = get_model("resnet8", num_classes=N_CLASSES, weights=path).eval()
        torch.testing.assert_close(loaded(x), net.eval()(x), msg=layout)
        assert list(read_state_dict(path)) == list(state)


def test_save_teacher_round_trips_through_get_model_and_load_teacher(tmp_path):
    net = get_model("wrn_16_1", num_classes=N_CLASSES)
    _hand_made_weights(net, seed=4)
    path = tmp_path / "teacher.pt"
    save_teacher(net, path)
    x = torch.randn(2, 3, 32, 32)
    expected = net.eval()(x)
    by_name = get_model("wrn_16_1", num_classes=N_CLASSES, weights=path).eval()
    by_loader = load_teacher(get_model("wrn_16_1", num_classes=N_CLASSES), path)
    torch.testing.assert_close(by_name(x), expected)
    torch.testing.assert_close(by_loader(x), expected)
    assert not by_loader.training


def test_load_teacher_reads_a_reference_checkpoint(tmp_path):
    reference = MODEL_DICT["resnet8x4"](num_classes=N_CLASSES)
    _hand_made_weights(reference, seed=5)
    path = tmp_path / "ckpt_epoch_240.pth"
    _reference_checkpoint(reference, path)
    x = torch.randn(2, 3, 32, 32)
    teacher = load_teacher(get_model("resnet8x4", num_classes=N_CLASSES), path)
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), reference.eval()(x))


class _Evil:
    """Unpickling it would create ``marker``: code run by torch.load."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("via", ["get_model", "load_teacher"])
def test_a_checkpoint_carrying_code_is_refused_and_never_runs(via, tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "ckpt_epoch_240.pth"
    state = get_model("resnet8", num_classes=N_CLASSES).state_dict()
    torch.save({"epoch": 240, "model": state, "hook": _Evil(marker)}, path)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match="weights_only=True"):
        if via == "get_model":
            get_model("resnet8", num_classes=N_CLASSES, weights=path)
        else:
            load_teacher(get_model("resnet8", num_classes=N_CLASSES), path)
    assert not marker.exists()


def test_mismatch_names_keys_and_architecture(tmp_path):
    path = tmp_path / "wrn.pth"
    torch.save({"model": get_model("wrn_16_1").state_dict()}, path)
    with pytest.raises(ValueError) as info:
        get_model("resnet8", weights=path)
    message = str(info.value)
    assert "resnet8 (num_classes=100)" in message
    assert "missing keys" in message and "layer1.0.conv1.weight" in message
    assert "unexpected keys" in message and "block1.layer.0.bn1.weight" in message


def test_wrong_num_classes_names_the_shape(tmp_path):
    path = tmp_path / "r8.pth"
    torch.save(get_model("resnet8", num_classes=100).state_dict(), path)
    with pytest.raises(ValueError, match=r"fc.weight \(100, 64\) in the file"):
        get_model("resnet8", num_classes=10, weights=path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "x.pth"
    torch.save({"epoch": 3, "accuracy": 1.0}, path)
    with pytest.raises(ValueError, match="no state_dict under"):
        load_weights(get_model("resnet8"), path)
    with pytest.raises(FileNotFoundError, match="No checkpoint file"):
        get_model("resnet8", weights=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="must be the path of a checkpoint"):
        get_model("resnet8", weights="IMAGENET1K_V1")


def test_torchvision_weights_keep_their_meaning_and_take_paths(tmp_path):
    net = get_model("torchvision:resnet18", weights=None, num_classes=3)
    path = tmp_path / "tv.pth"
    torch.save({"model": net.state_dict()}, path)
    loaded = get_model("torchvision:resnet18", num_classes=3, weights=path)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded.eval()(x), net.eval()(x))
    # A string that is not a file is torchvision's (here: an unknown name).
    with pytest.raises((ValueError, KeyError)):
        get_model("torchvision:resnet18", weights="NO_SUCH_WEIGHTS")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_checkpoint_saved_from_cuda_loads_on_cpu(tmp_path):
    reference = MODEL_DICT["resnet8"](num_classes=N_CLASSES).cuda()
    path = tmp_path / "ckpt_epoch_240.pth"
    _reference_checkpoint(reference, path)
    model = get_model("resnet8", num_classes=N_CLASSES, weights=path)
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_vgg_pools_after_block3_only_for_64x64_inputs_as_the_reference(tmp_path):
    reference = MODEL_DICT["vgg8"](num_classes=N_CLASSES)
    _hand_made_weights(reference, seed=6)
    path = tmp_path / "vgg8.pth"
    torch.save({"model": reference.state_dict()}, path)
    model = get_model("vgg8", num_classes=N_CLASSES, weights=path).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference.eval()(x), rtol=1e-4, atol=1e-5)
