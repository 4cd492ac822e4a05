"""ResNet-50 for 32x32 images, as in the CRD benchmark.

ImageNet's ResNet-50 stages (3-4-6-3 bottleneck blocks, 256-512-1024-2048
output channels) behind a 3x3 stride-1 stem without max-pooling, so the stages
run at 32x32, 16x16, 8x8 and 4x4; 2048 penultimate features.

References
----------
.. [1] He, K., Zhang, X., Ren, S. and Sun, J. "Deep Residual Learning for Image
   Recognition", CVPR 2016. arXiv:1512.03385.
.. [2] Tian, Y., Krishnan, D. and Isola, P. "Contrastive Representation
   Distillation", ICLR 2020. arXiv:1910.10699.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import register_model
from .cifar_resnet import CifarResNet, conv

__all__ = ["Bottleneck", "CifarResNet50", "resnet50"]


class Bottleneck(nn.Module):
    """1x1, 3x3 and 1x1 conv-BN layers and a shortcut, then a ReLU.

    The output has ``4 * planes`` channels; the 3x3 convolution carries the
    stride (the "ResNet v1.5" placement). Module names follow the reference
    (``conv1`` ... ``bn3``, ``shortcut``; an empty ``shortcut`` is the
    identity).

    Parameters
    ----------
    in_channels : int
    planes : int
        Channels of the inner layers.
    stride : int, default=1
        Stride of the 3x3 convolution.
    downsample : torch.nn.Module or None, default=None
        The shortcut; ``None`` is the identity.
    """

    expansion: ClassVar[int] = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = conv(in_channels, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv(planes, planes, 3, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = nn.Sequential() if downsample is None else downsample

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet50(CifarResNet):
    """:class:`CifarResNet` whose classifier is named ``linear``, as in the
    reference ResNet-50 (``models/resnetv2.py``)."""

    head_name: ClassVar[str] = "linear"


@register_model
def resnet50(num_classes: int = 100, **kwargs: Any) -> CifarResNet:
    """ResNet-50 for 32x32 images: 23.71M parameters, 2048 features.

    The reference spells it ``ResNet50``; :func:`~projkd.models.get_model`
    accepts both names.

    Examples
    --------
    >>> net = resnet50()
    >>> net.num_features
    2048
    """
    return CifarResNet50(
        Bottleneck,
        layers=[3, 4, 6, 3],
        widths=[64, 128, 256, 512],
        stem_width=64,
        num_classes=num_classes,
        **kwargs,
    )
