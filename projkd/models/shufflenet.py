"""ShuffleNetV1 and ShuffleNetV2 for 32x32 images, as in the CRD benchmark.

Both replace the ImageNet stem (3x3 stride-2 convolution and max-pooling) by a
1x1 conv-BN-ReLU of 24 channels at full resolution; three stages then halve
the resolution (32 -> 16 -> 8 -> 4) before global average pooling and one
linear layer.

References
----------
.. [1] Zhang, X., Zhou, X., Lin, M. and Sun, J. "ShuffleNet: An Extremely
   Efficient Convolutional Neural Network for Mobile Devices", CVPR 2018.
   arXiv:1707.01083.
.. [2] Ma, N., Zhang, X., Zheng, H.-T. and Sun, J. "ShuffleNet V2: Practical
   Guidelines for Efficient CNN Architecture Design", ECCV 2018.
   arXiv:1807.11164.
.. [3] Tian, Y., Krishnan, D. and Isola, P. "Contrastive Representation
   Distillation", ICLR 2020. arXiv:1910.10699.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import PooledConvNet
from ._registry import register_model
from .cifar_resnet import conv_bn

__all__ = [
    "ShuffleNetV1",
    "ShuffleNetV2",
    "ShuffleV1Unit",
    "ShuffleV2Unit",
    "channel_shuffle",
    "shufflenetv1",
    "shufflenetv2",
]

_STEM_WIDTH = 24
# ShuffleNetV2's stage widths and head width by width multiplier (Ma et al.,
# Table 5; the CRD code has 224 for 244 at width 2, which it never uses).
_V2_WIDTHS: dict[float, tuple[int, int, int, int]] = {
    0.5: (48, 96, 192, 1024),
    1.0: (116, 232, 464, 1024),
    1.5: (176, 352, 704, 1024),
    2.0: (244, 488, 976, 2048),
}


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave the channels of ``groups`` groups: (g, C/g) -> (C/g, g)."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _check_identity(in_channels: int, out_channels: int, stride: int) -> None:
    if stride == 1 and in_channels != out_channels:
        raise ValueError(
            "A stride-1 unit keeps its width; got in_channels="
            f"{in_channels} and out_channels={out_channels}."
        )


class ShuffleV1Unit(nn.Module):
    """ShuffleNet unit: 1x1 group conv, shuffle, 3x3 depthwise, 1x1 group conv.

    At stride 1 the branch is added to the input; at stride 2 it is
    concatenated with the 3x3 average-pooled input, so the unit outputs
    ``in_channels + out_channels`` channels. A ReLU follows the sum or
    concatenation, and (as in the CRD benchmark, unlike the paper) also the
    depthwise convolution.

    Parameters
    ----------
    in_channels : int
    out_channels : int
        Output channels of the branch, divisible by 4; equal to
        ``in_channels`` at stride 1.
    stride : {1, 2}
    groups : int
        Groups of the 1x1 convolutions.
    squeeze_groups : int or None, default=None
        Groups of the first 1x1 convolution (and of the shuffle) if not
        ``groups``: 1 for the network's first unit, whose input is too narrow.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        groups: int,
        squeeze_groups: int | None = None,
    ) -> None:
        super().__init__()
        _check_identity(in_channels, out_channels, stride)
        mid = out_channels // 4
        self.squeeze_groups = groups if squeeze_groups is None else squeeze_groups
        self.conv1 = conv_bn(in_channels, mid, groups=self.squeeze_groups, relu=True)
        self.conv2 = conv_bn(mid, mid, 3, stride, groups=mid, relu=True)
        self.conv3 = conv_bn(mid, out_channels, groups=groups, relu=False)
        self.pool = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else None

    def forward(self, x: Tensor) -> Tensor:
        out = channel_shuffle(self.conv1(x), self.squeeze_groups)
        out = self.conv3(self.conv2(out))
        if self.pool is None:
            return F.relu(out + x)
        return F.relu(torch.cat([out, self.pool(x)], dim=1))


class ShuffleV2Unit(nn.Module):
    """ShuffleNetV2 unit, basic (stride 1) or down-sampling (stride 2).

    Stride 1: half the channels pass unchanged, the other half go through
    1x1 conv-BN-ReLU, 3x3 depthwise conv-BN, 1x1 conv-BN-ReLU. Stride 2: the
    whole input goes through that branch and through a second one (3x3
    depthwise conv-BN, 1x1 conv-BN-ReLU). The halves are concatenated and
    shuffled in two groups.

    Parameters
    ----------
    in_channels : int
    out_channels : int
        Even; equal to ``in_channels`` at stride 1.
    stride : {1, 2}, default=1
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        _check_identity(in_channels, out_channels, stride)
        half = out_channels // 2
        self.left: nn.Sequential | None = None
        if stride != 1:
            self.left = nn.Sequential(
                conv_bn(in_channels, in_channels, 3, stride, in_channels, relu=False),
                conv_bn(in_channels, half, relu=True),
            )
        self.right = nn.Sequential(
            conv_bn(in_channels if stride != 1 else half, half, relu=True),
            conv_bn(half, half, 3, stride, groups=half, relu=False),
            conv_bn(half, half, relu=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.left is None:
            kept, x = x.chunk(2, dim=1)
        else:
            kept = self.left(x)
        return channel_shuffle(torch.cat([kept, self.right(x)], dim=1), 2)


class _ShuffleNet(PooledConvNet):
    """The stem, stages, (head) and classifier shared by both versions."""

    def __init__(
        self, stages: list[nn.Module], head: nn.Module, width: int, num_classes: int
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, _STEM_WIDTH, relu=True), *stages, head)
        self.num_features = width
        self.classifier = nn.Linear(width, num_classes)


class ShuffleNetV1(_ShuffleNet):
    """ShuffleNet (V1) for 32x32 images.

    Parameters
    ----------
    stage_channels : sequence of int, default=(240, 480, 960)
        Output channels of each stage (those of ``groups=3`` in the paper).
    stage_units : sequence of int, default=(4, 8, 4)
        Units per stage, the first of which halves the resolution.
    groups : int, default=3
        Groups of the 1x1 convolutions.
    num_classes : int, default=100

    Attributes
    ----------
    num_features : int
        Width of the penultimate features, ``stage_channels[-1]``.

    References
    ----------
    .. [1] Zhang, X., Zhou, X., Lin, M. and Sun, J. "ShuffleNet: An Extremely
       Efficient Convolutional Neural Network for Mobile Devices", CVPR 2018.
       arXiv:1707.01083.

    Examples
    --------
    >>> import torch
    >>> net = ShuffleNetV1(stage_units=(1, 1, 1), num_classes=10)
    >>> tuple(net.forward_features(torch.zeros(2, 3, 32, 32)).shape)
    (2, 960)
    """

    def __init__(
        self,
        stage_channels: Sequence[int] = (240, 480, 960),
        stage_units: Sequence[int] = (4, 8, 4),
        groups: int = 3,
        num_classes: int = 100,
    ) -> None:
        stages: list[nn.Module] = []
        in_channels = _STEM_WIDTH
        for channels, n_units in zip(stage_channels, stage_units, strict=True):
            # The down-sampling unit concatenates its input to its branch; in
            # the network's first unit, the stem's output is not split in groups.
            units = [
                ShuffleV1Unit(
                    in_channels,
                    channels - in_channels,
                    stride=2,
                    groups=groups,
                    squeeze_groups=None if stages else 1,
                )
            ]
            units += [
                ShuffleV1Unit(channels, channels, 1, groups) for _ in range(n_units - 1)
            ]
            stages.append(nn.Sequential(*units))
            in_channels = channels
        super().__init__(stages, nn.Identity(), in_channels, num_classes)


class ShuffleNetV2(_ShuffleNet):
    """ShuffleNetV2 for 32x32 images.

    After the three stages, a 1x1 conv-BN-ReLU widens the features to 1024
    (2048 at width 2).

    Parameters
    ----------
    width_mult : {0.5, 1.0, 1.5, 2.0}, default=1.0
        The network size of the paper's Table 5, which sets the widths.
    stage_units : sequence of int, default=(4, 8, 4)
        Units per stage, the first of which halves the resolution.
    num_classes : int, default=100

    Attributes
    ----------
    num_features : int
        Width of the penultimate features, 1024 (2048 at width 2).

    References
    ----------
    .. [1] Ma, N., Zhang, X., Zheng, H.-T. and Sun, J. "ShuffleNet V2: Practical
       Guidelines for Efficient CNN Architecture Design", ECCV 2018.
       arXiv:1807.11164.

    Examples
    --------
    >>> import torch
    >>> net = ShuffleNetV2(width_mult=0.5, num_classes=10)
    >>> tuple(net.forward_features(torch.zeros(2, 3, 32, 32)).shape)
    (2, 1024)
    """

    def __init__(
        self,
        width_mult: float = 1.0,
        stage_units: Sequence[int] = (4, 8, 4),
        num_classes: int = 100,
    ) -> None:
        if width_mult not in _V2_WIDTHS:
            raise ValueError(
                f"width_mult must be one of {sorted(_V2_WIDTHS)}; got {width_mult}."
            )
        *stage_channels, width = _V2_WIDTHS[width_mult]
        stages: list[nn.Module] = []
        in_channels = _STEM_WIDTH
        for channels, n_units in zip(stage_channels, stage_units, strict=True):
            units = [ShuffleV2Unit(in_channels, channels, stride=2)]
            units += [ShuffleV2Unit(channels, channels) for _ in range(n_units - 1)]
            stages.append(nn.Sequential(*units))
            in_channels = channels
        head = conv_bn(in_channels, width, relu=True)
        super().__init__(stages, head, width, num_classes)


@register_model
def shufflenetv1(num_classes: int = 100, **kwargs: Any) -> ShuffleNetV1:
    """ShuffleNetV1 (3 groups): 0.95M parameters, 960 features."""
    return ShuffleNetV1(num_classes=num_classes, **kwargs)


@register_model
def shufflenetv2(num_classes: int = 100, **kwargs: Any) -> ShuffleNetV2:
    """ShuffleNetV2 (width 1): 1.36M parameters, 1024 features."""
    return ShuffleNetV2(num_classes=num_classes, **kwargs)
