"""CNNs sized for 28x28 MNIST, in teacher and student sizes.

The student's feature width is a parameter, so that the paper's "same
dimensions" comparison (feature distillation without a projector, which needs
equal widths) is made with ``mnist_student(n_features=128)`` against
``mnist_teacher()``.
"""

from __future__ import annotations

from torch import nn

from ._base import PooledConvNet
from ._registry import register_model
from .cifar_resnet import conv_bn

__all__ = ["MnistCNN", "mnist_student", "mnist_teacher"]


def _stage(in_channels: int, out_channels: int, n_convs: int) -> list[nn.Module]:
    """``n_convs`` 3x3 conv-BN-ReLU, flat (``features.N`` names)."""
    return [
        layer
        for i in range(n_convs)
        for layer in conv_bn(
            in_channels if i == 0 else out_channels, out_channels, 3, relu=True
        )
    ]


class MnistCNN(PooledConvNet):
    """Three conv-BN-ReLU stages (28, 14 and 7 pixels), pooling and a linear head.

    Max pooling halves the resolution between stages; the last stage is
    globally average-pooled into the penultimate features (after its ReLU).

    Parameters
    ----------
    widths : tuple of int, default=(32, 64)
        Channels of the first two stages.
    n_features : int, default=128
        Channels of the last stage: the width of the penultimate features.
    convs_per_stage : int, default=1
        3x3 convolutions in each stage.
    num_classes : int, default=10
    in_channels : int, default=1

    Examples
    --------
    >>> import torch
    >>> net = MnistCNN(widths=(8, 16), n_features=32)
    >>> tuple(net.forward_features(torch.zeros(2, 1, 28, 28)).shape)
    (2, 32)
    """

    def __init__(
        self,
        widths: tuple[int, int] = (32, 64),
        n_features: int = 128,
        convs_per_stage: int = 1,
        num_classes: int = 10,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        first, second = widths
        self.num_features = n_features
        self.features = nn.Sequential(
            *_stage(in_channels, first, convs_per_stage),
            nn.MaxPool2d(2),
            *_stage(first, second, convs_per_stage),
            nn.MaxPool2d(2),
            *_stage(second, n_features, convs_per_stage),
        )
        self.classifier = nn.Linear(n_features, num_classes)


@register_model
def mnist_teacher(num_classes: int = 10, in_channels: int = 1) -> MnistCNN:
    """MNIST teacher: two convolutions per stage, 32-64-128 channels, 128
    features (~288k parameters)."""
    return MnistCNN(
        widths=(32, 64),
        n_features=128,
        convs_per_stage=2,
        num_classes=num_classes,
        in_channels=in_channels,
    )


@register_model
def mnist_student(
    n_features: int = 128, num_classes: int = 10, in_channels: int = 1
) -> MnistCNN:
    """MNIST student: one conv per stage, 8-16 channels, then ``n_features``.

    The default width, 128, equals :func:`mnist_teacher`'s, so the student can
    be distilled without a projector.
    """
    return MnistCNN(
        widths=(8, 16),
        n_features=n_features,
        convs_per_stage=1,
        num_classes=num_classes,
        in_channels=in_channels,
    )
