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
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import PooledConvNet
from ._registry import register_model
from .cifar_resnet import conv

__all__ = [
    "ShuffleNetV1",
    "ShuffleNetV2",
    "ShuffleV1Unit",
    "ShuffleV2DownUnit",
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
    concatenated with the 3x3 average-pooled input (``shortcut``), so the
    unit outputs ``in_channels + out_channels`` channels. A ReLU follows the
    sum or concatenation, and (as in the CRD benchmark, unlike the paper) also
    the depthwise convolution. Module names are those of the reference
    (``conv1``, ``bn1`` ... ``conv3``, ``bn3``).

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
        self.conv1 = conv(in_channels, mid, groups=self.squeeze_groups)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = conv(mid, mid, 3, stride, groups=mid)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = conv(mid, out_channels, groups=groups)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.stride = stride
        self.shortcut = nn.Sequential()
        if stride == 2:
            self.shortcut.append(nn.AvgPool2d(3, stride=2, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.squeeze_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 1:
            return F.relu(out + x)
        return F.relu(torch.cat([out, self.shortcut(x)], dim=1))


class ShuffleV2Unit(nn.Module):
    """ShuffleNetV2 basic unit (stride 1).

    Half the channels pass unchanged, the other half go through 1x1
    conv-BN-ReLU, 3x3 depthwise conv-BN, 1x1 conv-BN-ReLU; the halves are
    concatenated and shuffled in two groups. Named ``BasicBlock`` in the
    reference (``conv1`` ... ``bn3``).

    Parameters
    ----------
    channels : int
        Even; input and output width.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.conv1 = conv(half, half)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = conv(half, half, 3, groups=half)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = conv(half, half)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: Tensor) -> Tensor:
        kept, x = x.chunk(2, dim=1)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn3(self.conv3(self.bn2(self.conv2(out)))))
        return channel_shuffle(torch.cat([kept, out], dim=1), 2)


class ShuffleV2DownUnit(nn.Module):
    """ShuffleNetV2 down-sampling unit (stride 2).

    The whole input goes through two branches: 3x3 depthwise conv-BN (stride
    2), 1x1 conv-BN-ReLU (``conv1``, ``conv2``); and 1x1 conv-BN-ReLU, 3x3
    depthwise conv-BN (stride 2), 1x1 conv-BN-ReLU (``conv3`` ... ``conv5``).
    Their outputs are concatenated and shuffled in two groups. Named
    ``DownBlock`` in the reference.

    Parameters
    ----------
    in_channels : int
    out_channels : int
        Even.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        half = out_channels // 2
        self.conv1 = conv(in_channels, in_channels, 3, 2, groups=in_channels)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = conv(in_channels, half)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = conv(in_channels, half)
        self.bn3 = nn.BatchNorm2d(half)
        self.conv4 = conv(half, half, 3, 2, groups=half)
        self.bn4 = nn.BatchNorm2d(half)
        self.conv5 = conv(half, half)
        self.bn5 = nn.BatchNorm2d(half)

    def forward(self, x: Tensor) -> Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], dim=1), 2)


class _ShuffleNet(PooledConvNet):
    """The stem (``conv1``, ``bn1``), stages ``layer1`` ... ``layer3`` and
    classifier (``linear``) shared by both versions, named as in the reference.
    """

    head_name: ClassVar[str] = "linear"

    linear: nn.Linear

    def __init__(self, stages: list[nn.Module], width: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = conv(3, _STEM_WIDTH)
        self.bn1 = nn.BatchNorm2d(_STEM_WIDTH)
        for i, stage in enumerate(stages):
            self.add_module(f"layer{i + 1}", stage)
        self.num_stages = len(stages)
        self.num_features = width

    def _trunk(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x

    def forward_features(self, x: Tensor) -> Tensor:
        """The penultimate features: pooled, after the last ReLU."""
        return self._trunk(x).mean(dim=(2, 3))


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
        super().__init__(stages, in_channels, num_classes)
        self.linear = nn.Linear(in_channels, num_classes)


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
            units: list[nn.Module] = [ShuffleV2DownUnit(in_channels, channels)]
            units += [ShuffleV2Unit(channels) for _ in range(n_units - 1)]
            stages.append(nn.Sequential(*units))
            in_channels = channels
        super().__init__(stages, width, num_classes)
        # the 1x1 conv-BN-ReLU that widens the features, then the classifier
        self.conv2 = conv(in_channels, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.linear = nn.Linear(width, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """The penultimate features: pooled, after the last ReLU."""
        x = F.relu(self.bn2(self.conv2(self._trunk(x))))
        return x.mean(dim=(2, 3))


@register_model
def shufflenetv1(num_classes: int = 100, **kwargs: Any) -> ShuffleNetV1:
    """ShuffleNetV1 (3 groups): 0.95M parameters, 960 features.

    The reference spells it ``ShuffleV1``; :func:`~projkd.models.get_model`
    accepts both names.
    """
    return ShuffleNetV1(num_classes=num_classes, **kwargs)


@register_model
def shufflenetv2(num_classes: int = 100, **kwargs: Any) -> ShuffleNetV2:
    """ShuffleNetV2 (width 1): 1.36M parameters, 1024 features.

    The reference spells it ``ShuffleV2``; :func:`~projkd.models.get_model`
    accepts both names.
    """
    return ShuffleNetV2(num_classes=num_classes, **kwargs)
