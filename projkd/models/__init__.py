"""Networks for distillation: the CIFAR-100 benchmark zoo, digits CNNs, and
torchvision's models through :func:`get_model`.

Every zoo model exposes ``forward(x)`` (logits), ``forward_features(x)`` (the
pooled penultimate vector, after the last ReLU) and ``forward_head(f)``.
"""

from ._registry import get_model, list_models, register_model
from .digits import DigitsCNN, digits_student, digits_teacher

__all__ = [
    "DigitsCNN",
    "digits_student",
    "digits_teacher",
    "get_model",
    "list_models",
    "register_model",
]
