"""MobileNetV2 for 32x32 images, as in the CRD benchmark (width 0.5).

Sandler et al.'s inverted residual stages with the benchmark's CIFAR changes:
the stem keeps stride 2 but the second stage runs at stride 1, so the
resolution goes 32 -> 16 -> 8 -> 4 -> 2; every block, the first included, has
its expansion convolution; the 1x1 head convolution keeps 1280 channels at
widths up to 1 (1280 features), followed by global average pooling and one
linear layer.

References
----------
.. [1] Sandler, M., Howard, A., Zhu, M., Zhmoginov, A. and Chen, L.-C.
   "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018.
   arXiv:1801.04381.
.. [2] Tian, Y., Krishnan, D. and Isola, P. "Contrastive Representation
   Distillation", ICLR 2020. arXiv:1910.10699.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ._base import PooledConvNet
from ._registry import register_model
from .cifar_resnet import conv_bn, init_weights

__all__ = ["InvertedResidual", "MobileNetV2", "mobilenetv2"]

# Stages: output channels (before width_mult), blocks, stride of the first block.
_STAGES = (
    (16, 1, 1),
    (24, 2, 1),
    (32, 3, 2),
    (64, 4, 2),
    (96, 3, 1),
    (160, 3, 2),
    (320, 1, 1),
)


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise 3x3, project (1x1, linear); residual if shapes match.

    The eight layers sit in one ``conv`` sequence (conv, BN, ReLU, conv, BN,
    ReLU, conv, BN), as in the reference code.

    Parameters
    ----------
    in_channels : int
    out_channels : int
    stride : {1, 2}
        Stride of the depthwise convolution.
    expand_ratio : int
        Inner channels per input channel.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, expand_ratio: int
    ) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            *conv_bn(in_channels, hidden, relu=True),
            *conv_bn(hidden, hidden, 3, stride, groups=hidden, relu=True),
            *conv_bn(hidden, out_channels, relu=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(PooledConvNet):
    """MobileNetV2 for 32x32 images.

    Modules are named as in the CRD benchmark's code (``conv1``,
    ``blocks.<stage>.<block>.conv``, ``conv2``, ``classifier.0``), so its
    checkpoints load with ``strict=True``.

    Parameters
    ----------
    width_mult : float, default=0.5
        Multiplies the channels of the stem and of every stage (rounded down),
        and of the head convolution only when above 1.
    expand_ratio : int, default=6
        Expansion of every block but the first (whose expansion is 1).
    num_classes : int, default=100

    Attributes
    ----------
    num_features : int
        Width of the penultimate features: 1280, or ``int(1280 * width_mult)``
        for ``width_mult > 1``.

    References
    ----------
    .. [1] Sandler, M., Howard, A., Zhu, M., Zhmoginov, A. and Chen, L.-C.
       "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018.
       arXiv:1801.04381.

    Examples
    --------
    >>> import torch
    >>> net = MobileNetV2(width_mult=0.25, num_classes=10)
    >>> tuple(net.forward_features(torch.zeros(2, 3, 32, 32)).shape)
    (2, 1280)
    """

    def __init__(
        self, width_mult: float = 0.5, expand_ratio: int = 6, num_classes: int = 100
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive; got {width_mult}.")
        in_channels = int(32 * width_mult)
        self.conv1 = conv_bn(3, in_channels, 3, 2, relu=True)
        self.blocks = nn.ModuleList()
        for stage, (channels, n_blocks, stride) in enumerate(_STAGES):
            out_channels = int(channels * width_mult)
            layers = []
            for i in range(n_blocks):
                layers.append(
                    InvertedResidual(
                        in_channels,
                        out_channels,
                        stride if i == 0 else 1,
                        expand_ratio if stage > 0 else 1,
                    )
                )
                in_channels = out_channels
            self.blocks.append(nn.Sequential(*layers))
        self.num_features = int(1280 * width_mult) if width_mult > 1 else 1280
        self.conv2 = conv_bn(in_channels, self.num_features, relu=True)
        linear = nn.Linear(self.num_features, num_classes)
        self.classifier = nn.Sequential(linear)

        init_weights(self)
        nn.init.normal_(linear.weight, std=0.01)
        nn.init.zeros_(linear.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """The penultimate features: pooled, after the last ReLU."""
        x = self.conv1(x)
        for stage in self.blocks:
            x = stage(x)
        return self.conv2(x).mean(dim=(2, 3))


@register_model
def mobilenetv2(num_classes: int = 100, **kwargs: Any) -> MobileNetV2:
    """MobileNetV2, width 0.5: 0.81M parameters, 1280 features.

    The reference spells it ``MobileNetV2`` (factory ``mobile_half``);
    :func:`~projkd.models.get_model` accepts those names too.
    """
    return MobileNetV2(num_classes=num_classes, **kwargs)
