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
from .cifar_resnet import CifarResNet, conv_bn

__all__ = ["Bottleneck", "resnet50"]


class Bottleneck(nn.Module):
    """1x1, 3x3 and 1x1 conv-BN layers and a shortcut, then a ReLU.

    The output has ``4 * planes`` channels; the 3x3 convolution carries the
    stride (the "ResNet v1.5" placement).

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
        self.conv1 = conv_bn(in_channels, planes, relu=True)
        self.conv2 = conv_bn(planes, planes, 3, stride, relu=True)
        self.conv3 = conv_bn(planes, planes * self.expansion, relu=False)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv3(self.conv2(self.conv1(x)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


@register_model
def resnet50(num_classes: int = 100, **kwargs: Any) -> CifarResNet:
    """ResNet-50 for 32x32 images: 23.71M parameters, 2048 features.

    Examples
    --------
    >>> net = resnet50()
    >>> net.num_features
    2048
    """
    return CifarResNet(
        Bottleneck,
        layers=[3, 4, 6, 3],
        widths=[64, 128, 256, 512],
        stem_width=64,
        num_classes=num_classes,
        **kwargs,
    )
