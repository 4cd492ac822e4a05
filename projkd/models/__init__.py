"""Networks for distillation: the CIFAR-100 benchmark zoo, digits and MNIST
CNNs, and torchvision's and timm's models through :func:`get_model`.

Every zoo model exposes ``forward(x)`` (logits), ``forward_features(x)`` (the
pooled penultimate vector, after the last ReLU) and ``forward_head(f)``. Zoo
modules are named as in the CRD benchmark's code (RepDistiller's
``models/``), so its published checkpoints load with
``get_model(name, weights=path)``.
"""

from . import cifar_resnet50  # noqa: F401  (registers resnet50)
from ._registry import get_model, list_models, register_model
from ._timm import TimmModel
from ._weights import (
    UnsafeWeightsError,
    WeightsFileError,
    check_weights_file,
    load_checkpoint,
    load_weights,
    read_state_dict,
)
from .cifar_resnet import CifarResNet
from .digits import DigitsCNN, digits_student, digits_teacher
from .mnist import MnistCNN, mnist_student, mnist_teacher
from .mobilenetv2 import MobileNetV2
from .shufflenet import ShuffleNetV1, ShuffleNetV2
from .vgg import VGG
from .wrn import WideResNet

__all__ = [
    "CifarResNet",
    "DigitsCNN",
    "MnistCNN",
    "MobileNetV2",
    "ShuffleNetV1",
    "ShuffleNetV2",
    "TimmModel",
    "UnsafeWeightsError",
    "WeightsFileError",
    "check_weights_file",
    "load_checkpoint",
    "VGG",
    "WideResNet",
    "digits_student",
    "digits_teacher",
    "get_model",
    "list_models",
    "load_weights",
    "read_state_dict",
    "mnist_student",
    "mnist_teacher",
    "register_model",
]
