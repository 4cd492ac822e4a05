"""ResNets for 32x32 images, as in the CRD benchmark.

The CIFAR form of He et al. (2016): a 3x3 stem without max-pooling, three
stages of basic blocks at 32x32, 16x16 and 8x8, projection shortcuts (1x1
convolution and BatchNorm) where the shape changes, global average pooling and
one linear layer. ``resnet8`` ... ``resnet110`` have 16-16-32-64 channels
(64 features); ``resnet8x4`` and ``resnet32x4`` have 32-64-128-256 (256
features).

References
----------
.. [1] He, K., Zhang, X., Ren, S. and Sun, J. "Deep Residual Learning for Image
   Recognition", CVPR 2016. arXiv:1512.03385.
.. [2] Tian, Y., Krishnan, D. and Isola, P. "Contrastive Representation
   Distillation", ICLR 2020. arXiv:1910.10699.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import torch.nn.functional as F
from torch import Tensor, nn

from ._base import PooledConvNet
from ._registry import register_model

__all__ = [
    "BasicBlock",
    "CifarResNet",
    "conv",
    "conv_bn",
    "init_weights",
    "resnet8",
    "resnet8x4",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet32x4",
    "resnet44",
    "resnet56",
    "resnet110",
]

_WIDTHS = (16, 16, 32, 64)  # stem, then one width per stage
_WIDTHS_X4 = (32, 64, 128, 256)


def init_weights(module: nn.Module) -> None:
    """Initialise convolutions and BatchNorm as the CRD benchmark's networks do.

    Convolution weights are He-normal with fan-out (std ``sqrt(2 / (k*k*c_out))``)
    and their biases zero; BatchNorm weights are 1 and biases 0. Linear layers
    are left to each model, as the reference treats them differently.

    Parameters
    ----------
    module : torch.nn.Module
        Initialised in place, with all its submodules.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 1,
    stride: int = 1,
    groups: int = 1,
    *,
    relu: bool,
) -> nn.Sequential:
    """A bias-free convolution ("same" padding), BatchNorm, and optionally a ReLU.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int, default=1
        Odd; the padding is ``kernel_size // 2``.
    stride : int, default=1
    groups : int, default=1
        ``in_channels`` for a depthwise convolution.
    relu : bool
        Whether a ReLU follows the BatchNorm.

    Returns
    -------
    layers : torch.nn.Sequential
        Modules ``0`` (convolution), ``1`` (BatchNorm) and ``2`` (ReLU).
    """
    layers: list[nn.Module] = [
        conv(in_channels, out_channels, kernel_size, stride, groups),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 1,
    stride: int = 1,
    groups: int = 1,
) -> nn.Conv2d:
    """A bias-free convolution with "same" padding (``kernel_size // 2``)."""
    return nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride,
        padding=kernel_size // 2,
        groups=groups,
        bias=False,
    )


class ResidualBlock(Protocol):
    """What :class:`CifarResNet` needs of a block class."""

    #: Output channels of a block per channel of its ``planes``.
    expansion: int

    def __call__(
        self,
        in_channels: int,
        planes: int,
        stride: int = ...,
        downsample: nn.Module | None = ...,
    ) -> nn.Module: ...


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a shortcut, then a ReLU (output ``planes``).

    Module names are those of the reference code (``conv1``, ``bn1``,
    ``conv2``, ``bn2``, ``downsample``), so its checkpoints load unchanged.

    Parameters
    ----------
    in_channels : int
    planes : int
        Output channels.
    stride : int, default=1
        Stride of the first convolution.
    downsample : torch.nn.Module or None, default=None
        The shortcut; ``None`` is the identity.
    """

    expansion: ClassVar[int] = 1

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = conv(in_channels, planes, 3, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv(planes, planes, 3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class CifarResNet(PooledConvNet):
    """A ResNet for 32x32 images: 3x3 stem, no max-pooling, stages of blocks.

    The first stage keeps the resolution, every later one halves it with a
    stride-2 first block; a 1x1 conv-BN projection is the shortcut wherever
    stride or width changes, the identity elsewhere. The penultimate features
    are the globally average-pooled output of the last block (after its ReLU).

    Modules are named as in the CRD benchmark's code (``conv1``, ``bn1``,
    ``layer1`` ... ``layerN``, ``fc``), so its checkpoints load with
    ``strict=True``; :attr:`head_name` names the linear layer (``"linear"``
    for the reference ResNet-50).

    Parameters
    ----------
    block : type
        The block class, :class:`BasicBlock` or
        :class:`~projkd.models.cifar_resnet50.Bottleneck`.
    layers : sequence of int
        Blocks per stage.
    widths : sequence of int
        ``planes`` of each stage (its output has ``planes * block.expansion``
        channels); as many as ``layers``.
    stem_width : int, default=16
        Output channels of the 3x3 stem convolution.
    num_classes : int, default=100

    Attributes
    ----------
    num_features : int
        Width of the penultimate features, ``widths[-1] * block.expansion``.

    References
    ----------
    .. [1] He, K., Zhang, X., Ren, S. and Sun, J. "Deep Residual Learning for
       Image Recognition", CVPR 2016. arXiv:1512.03385.

    Examples
    --------
    >>> import torch
    >>> net = CifarResNet(BasicBlock, layers=[1, 1, 1], widths=[16, 32, 64])
    >>> tuple(net.forward_features(torch.zeros(2, 3, 32, 32)).shape)
    (2, 64)
    >>> list(net.state_dict())[:2]
    ['conv1.weight', 'bn1.weight']
    """

    #: Name of the final linear layer.
    head_name: ClassVar[str] = "fc"

    def __init__(
        self,
        block: ResidualBlock,
        layers: Sequence[int],
        widths: Sequence[int],
        stem_width: int = 16,
        num_classes: int = 100,
    ) -> None:
        super().__init__()
        if len(layers) != len(widths) or not layers:
            raise ValueError(
                f"layers and widths need one entry per stage; got layers={layers} "
                f"and widths={widths}."
            )
        self.conv1 = conv(3, stem_width, 3)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        in_channels = stem_width
        self.num_stages = len(layers)
        for i, (n_blocks, planes) in enumerate(zip(layers, widths, strict=True)):
            stride = 1 if i == 0 else 2
            out_channels = planes * block.expansion
            downsample = None
            if stride != 1 or in_channels != out_channels:
                downsample = conv_bn(in_channels, out_channels, 1, stride, relu=False)
            blocks = [block(in_channels, planes, stride, downsample)]
            blocks += [block(out_channels, planes) for _ in range(n_blocks - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            in_channels = out_channels
        self.num_features = in_channels
        self.add_module(self.head_name, nn.Linear(in_channels, num_classes))

        init_weights(self)

    def stages(self) -> list[nn.Module]:
        """The stages ``layer1`` ... ``layerN``, in order."""
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def forward_features(self, x: Tensor) -> Tensor:
        """The penultimate features: pooled, after the last ReLU."""
        x = self.relu(self.bn1(self.conv1(x)))
        for stage in self.stages():
            x = stage(x)
        return x.mean(dim=(2, 3))


def _basic_resnet(
    depth: int, widths: Sequence[int], num_classes: int, **kwargs: Any
) -> CifarResNet:
    """A three-stage ResNet of basic blocks, ``depth = 6 n + 2`` layers."""
    if (depth - 2) % 6 != 0:
        raise ValueError(f"depth must be 6n + 2 (8, 14, 20, ...); got {depth}.")
    n = (depth - 2) // 6
    return CifarResNet(
        BasicBlock,
        layers=[n] * 3,
        widths=widths[1:],
        stem_width=widths[0],
        num_classes=num_classes,
        **kwargs,
    )


@register_model
def resnet8(num_classes: int = 100, **kwargs: Any) -> CifarResNet:
    """ResNet-8 (16-16-32-64 channels): 0.08M parameters, 64 features."""
    return _basic_resnet(8, _WIDTHS, num_classes, **kwargs)


@register_model
def resnet14(num_classes: int = 100, **kwargs: Any) -> CifarResNet:
    """ResNet-14 (16-16-32-64 channels): 0.18M parameters, 64 features."""
    return _basic_resnet(14, _WIDTHS, num_classes, **kwargs)


@register_model
def resnet20(num_classes: int = 100, **kwargs: Any) -> CifarResNet:
    """ResNet-20 (16-16-32-64 channels): 0.28M parameters, 64 features."""
    return _basic_resnet(20, _WIDTHS, num_classes, **kwargs)


@register_model
def resnet32(num_classes: int = 100, **kwargs: Any) -> CifarResNet:
    """ResNet-32 (16-16-32-64 channels): 0.47M parameters, 64 features."""
    return _basic_resnet(32, _WIDTHS, num_classes, **kwargs)


@register_model
def resnet44(num_classes: int = 100, **kwargs: Any) -> CifarResNet:
    """ResNet-44 (16-16-32-64 channels): 0.67M parameters, 64 features."""
    return _basic_resnet(44, _WIDTHS, num_classes, **kwargs)


@register_model
def resnet56(num_classes: int = 100, **kwargs: Any) -> CifarResNet:
    """ResNet-56 (16-16-32-64 channels): 0.86M parameters, 64 features."""
    return _basic_resnet(56, _WIDTHS, num_classes, **kwargs)


@register_model
def resnet110(num_classes: int = 100, **kwargs: Any) -> CifarResNet:
    """ResNet-110 (16-16-32-64 channels): 1.74M parameters, 64 features."""
    return _basic_resnet(110, _WIDTHS, num_classes, **kwargs)


@register_model
def resnet8x4(num_classes: int = 100, **kwargs: Any) -> CifarResNet:
    """ResNet-8, wider (32-64-128-256 channels): 1.23M parameters, 256 features."""
    return _basic_resnet(8, _WIDTHS_X4, num_classes, **kwargs)


@register_model
def resnet32x4(num_classes: int = 100, **kwargs: Any) -> CifarResNet:
    """ResNet-32, wider (32-64-128-256 channels): 7.43M parameters, 256 features."""
    return _basic_resnet(32, _WIDTHS_X4, num_classes, **kwargs)
