"""Wide ResNets for 32x32 images, as in the CRD benchmark.

``wrn_d_k`` has depth ``d = 6 n + 4`` and widening factor ``k``: a 3x3 stem of
16 channels, three stages of ``n`` pre-activation blocks with ``16 k``,
``32 k`` and ``64 k`` channels, a final BN-ReLU and global average pooling
(``64 k`` features).

References
----------
.. [1] Zagoruyko, S. and Komodakis, N. "Wide Residual Networks", BMVC 2016.
   arXiv:1605.07146.
.. [2] Tian, Y., Krishnan, D. and Isola, P. "Contrastive Representation
   Distillation", ICLR 2020. arXiv:1910.10699.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from ._base import PooledConvNet
from ._registry import register_model
from .cifar_resnet import init_weights

__all__ = [
    "NetworkBlock",
    "WideBasicBlock",
    "WideResNet",
    "wrn_16_1",
    "wrn_16_2",
    "wrn_40_1",
    "wrn_40_2",
]


class WideBasicBlock(nn.Module):
    """A pre-activation block: BN-ReLU-conv3x3, BN-ReLU-(dropout)-conv3x3.

    Where the width changes, the shortcut is a 1x1 convolution
    (``convShortcut``) of the block's pre-activated input; elsewhere it is the
    raw input. Module names are those of the reference code.

    Parameters
    ----------
    in_channels : int
    out_channels : int
    stride : int, default=1
        Stride of the first convolution (and of the shortcut).
    drop_rate : float, default=0.0
        Dropout probability between the two convolutions.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, 3, stride, padding=1, bias=False
        )
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.drop_rate = drop_rate
        # As in the reference, only a change of width gets a projection (in
        # these networks the stride never changes without the width).
        self.convShortcut: nn.Conv2d | None = None
        if in_channels != out_channels:
            self.convShortcut = nn.Conv2d(
                in_channels, out_channels, 1, stride, bias=False
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(x))
        shortcut = x if self.convShortcut is None else self.convShortcut(out)
        out = self.relu2(self.bn2(self.conv1(out)))
        out = F.dropout(out, p=self.drop_rate, training=self.training)
        return self.conv2(out) + shortcut


class NetworkBlock(nn.Module):
    """One stage of a :class:`WideResNet`: its blocks in ``layer``.

    Parameters
    ----------
    n_blocks : int
    in_channels, out_channels : int
    stride : int
        Stride of the first block.
    drop_rate : float, default=0.0
    """

    def __init__(
        self,
        n_blocks: int,
        in_channels: int,
        out_channels: int,
        stride: int,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *(
                WideBasicBlock(
                    in_channels if i == 0 else out_channels,
                    out_channels,
                    stride if i == 0 else 1,
                    drop_rate,
                )
                for i in range(n_blocks)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(PooledConvNet):
    """A wide ResNet for 32x32 images.

    Modules are named as in the CRD benchmark's code (``conv1``,
    ``block1.layer.0.bn1`` ..., ``bn1``, ``fc``), so its checkpoints load
    with ``strict=True``.

    Parameters
    ----------
    depth : int, default=40
        Number of layers, ``6 n + 4`` with ``n`` blocks per stage.
    widen_factor : int, default=2
        Stage widths are 16, 32 and 64 times this.
    drop_rate : float, default=0.0
        Dropout inside every block (0 in the benchmark).
    num_classes : int, default=100

    Attributes
    ----------
    num_features : int
        Width of the penultimate features, ``64 * widen_factor``.

    References
    ----------
    .. [1] Zagoruyko, S. and Komodakis, N. "Wide Residual Networks", BMVC 2016.
       arXiv:1605.07146.

    Examples
    --------
    >>> import torch
    >>> net = WideResNet(depth=10, widen_factor=1, num_classes=10)
    >>> tuple(net(torch.zeros(2, 3, 32, 32)).shape)
    (2, 10)
    """

    head_name: ClassVar[str] = "fc"

    def __init__(
        self,
        depth: int = 40,
        widen_factor: int = 2,
        drop_rate: float = 0.0,
        num_classes: int = 100,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"depth must be 6n + 4 (10, 16, 22, ...); got {depth}.")
        n = (depth - 4) // 6
        widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.block1 = NetworkBlock(n, 16, widths[0], 1, drop_rate)
        self.block2 = NetworkBlock(n, widths[0], widths[1], 2, drop_rate)
        self.block3 = NetworkBlock(n, widths[1], widths[2], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(widths[2])
        self.relu = nn.ReLU(inplace=True)
        self.num_features = widths[2]
        self.fc = nn.Linear(widths[2], num_classes)

        init_weights(self)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """The penultimate features: pooled, after the last ReLU."""
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.relu(self.bn1(x)).mean(dim=(2, 3))


@register_model
def wrn_16_1(num_classes: int = 100, **kwargs: Any) -> WideResNet:
    """WRN-16-1: 0.18M parameters, 64 features."""
    return WideResNet(depth=16, widen_factor=1, num_classes=num_classes, **kwargs)


@register_model
def wrn_16_2(num_classes: int = 100, **kwargs: Any) -> WideResNet:
    """WRN-16-2: 0.70M parameters, 128 features."""
    return WideResNet(depth=16, widen_factor=2, num_classes=num_classes, **kwargs)


@register_model
def wrn_40_1(num_classes: int = 100, **kwargs: Any) -> WideResNet:
    """WRN-40-1: 0.57M parameters, 64 features."""
    return WideResNet(depth=40, widen_factor=1, num_classes=num_classes, **kwargs)


@register_model
def wrn_40_2(num_classes: int = 100, **kwargs: Any) -> WideResNet:
    """WRN-40-2: 2.26M parameters, 128 features."""
    return WideResNet(depth=40, widen_factor=2, num_classes=num_classes, **kwargs)
