"""A small CNN for the built-in 8x8 digits, in teacher and student sizes."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from ._base import PooledConvNet
from ._registry import register_model

__all__ = ["DigitsCNN", "digits_student", "digits_teacher"]


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class DigitsCNN(PooledConvNet):
    """Three 3x3 conv-BN-ReLU blocks, global average pooling and a linear head.

    Parameters
    ----------
    width : int, default=16
        Channels of the first block (the second has twice as many).
    n_features : int, default=64
        Channels of the last block: the width of the penultimate features.
    num_classes : int, default=10
    in_channels : int, default=1

    Examples
    --------
    >>> import torch
    >>> net = DigitsCNN(width=8, n_features=32)
    >>> tuple(net.forward_features(torch.zeros(2, 1, 8, 8)).shape)
    (2, 32)
    """

    head_name: ClassVar[str] = "fc"

    def __init__(
        self,
        width: int = 16,
        n_features: int = 64,
        num_classes: int = 10,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        self.num_features = n_features
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, width),
            *_conv_bn_relu(width, 2 * width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(2 * width, n_features),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(n_features, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """The penultimate features: pooled, after the last ReLU."""
        return self.features(x)


@register_model
def digits_teacher(num_classes: int = 10, in_channels: int = 1) -> DigitsCNN:
    """The demo's teacher: 64-128-64 channels, 64 features (~149k parameters;
    0.1.0's was 32-64-64, ~57k, and no stronger than its students)."""
    return DigitsCNN(
        width=64, n_features=64, num_classes=num_classes, in_channels=in_channels
    )


@register_model
def digits_student(
    n_features: int = 64, num_classes: int = 10, in_channels: int = 1
) -> DigitsCNN:
    """The demo's student: 4-8 channels (~6k parameters at 64 features)."""
    return DigitsCNN(
        width=4, n_features=n_features, num_classes=num_classes, in_channels=in_channels
    )
