"""VGG networks with BatchNorm for 32x32 images, as in the CRD benchmark.

Five blocks of 3x3 conv-BN-ReLU layers (64, 128, 256, 512 and 512 channels),
2x2 max-pooling after each of the first three, global average pooling after
the last, and a single linear layer in place of VGG's three fully connected
ones (512 features). ``vgg8`` has one convolution per block, the others follow
configurations A (11), B (13), D (16) and E (19) of Simonyan & Zisserman.

References
----------
.. [1] Simonyan, K. and Zisserman, A. "Very Deep Convolutional Networks for
   Large-Scale Image Recognition", ICLR 2015. arXiv:1409.1556.
.. [2] Tian, Y., Krishnan, D. and Isola, P. "Contrastive Representation
   Distillation", ICLR 2020. arXiv:1910.10699.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ._base import PooledConvNet
from ._registry import register_model
from .cifar_resnet import init_weights

__all__ = ["VGG", "vgg8", "vgg11", "vgg13", "vgg16", "vgg19"]

# Output channels of each convolution, block by block, by depth.
_CONFIGS: dict[int, tuple[tuple[int, ...], ...]] = {
    8: ((64,), (128,), (256,), (512,), (512,)),
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    19: (
        (64, 64),
        (128, 128),
        (256, 256, 256, 256),
        (512, 512, 512, 512),
        (512, 512, 512, 512),
    ),
}


class VGG(PooledConvNet):
    """A VGG network for 32x32 images.

    Modules are named as in the CRD benchmark's code: five convolution
    blocks ``block0`` ... ``block4`` (each a sequence of conv, BN, ReLU
    whose last ReLU is applied in ``forward``), max-pooling ``pool0`` ...
    ``pool3`` and the linear ``classifier``, so its checkpoints load with
    ``strict=True``. As in the reference, ``pool3`` runs only for 64x64
    inputs.

    Parameters
    ----------
    depth : {8, 11, 13, 16, 19}, default=13
        Number of weight layers (convolutions and the linear layer).
    batch_norm : bool, default=True
        BatchNorm after every convolution (as in the benchmark).
    num_classes : int, default=100

    Attributes
    ----------
    num_features : int
        Width of the penultimate features, 512.

    References
    ----------
    .. [1] Simonyan, K. and Zisserman, A. "Very Deep Convolutional Networks for
       Large-Scale Image Recognition", ICLR 2015. arXiv:1409.1556.

    Examples
    --------
    >>> import torch
    >>> net = VGG(depth=8, num_classes=10)
    >>> tuple(net.forward_features(torch.zeros(2, 3, 32, 32)).shape)
    (2, 512)
    """

    def __init__(
        self, depth: int = 13, batch_norm: bool = True, num_classes: int = 100
    ) -> None:
        super().__init__()
        if depth not in _CONFIGS:
            raise ValueError(f"depth must be one of {sorted(_CONFIGS)}; got {depth}.")
        in_channels = 3
        for i, block in enumerate(_CONFIGS[depth]):
            layers: list[nn.Module] = []
            for out_channels in block:
                # Convolutions keep their bias even before BatchNorm, as in VGG.
                layers.append(nn.Conv2d(in_channels, out_channels, 3, padding=1))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(out_channels))
                layers.append(nn.ReLU(inplace=True))
                in_channels = out_channels
            self.add_module(f"block{i}", nn.Sequential(*layers[:-1]))
        for i in range(4):
            self.add_module(f"pool{i}", nn.MaxPool2d(2))
        self.num_features = in_channels
        self.classifier = nn.Linear(in_channels, num_classes)

        init_weights(self)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """The penultimate features: pooled, after the last ReLU."""
        pool_last = x.shape[2] == 64
        for i in range(5):
            x = F.relu(getattr(self, f"block{i}")(x))
            if i < 3 or (i == 3 and pool_last):
                x = getattr(self, f"pool{i}")(x)
        return x.mean(dim=(2, 3))


@register_model
def vgg8(num_classes: int = 100, **kwargs: Any) -> VGG:
    """VGG-8 with BatchNorm: 3.97M parameters, 512 features."""
    return VGG(depth=8, num_classes=num_classes, **kwargs)


@register_model
def vgg11(num_classes: int = 100, **kwargs: Any) -> VGG:
    """VGG-11 with BatchNorm: 9.28M parameters, 512 features."""
    return VGG(depth=11, num_classes=num_classes, **kwargs)


@register_model
def vgg13(num_classes: int = 100, **kwargs: Any) -> VGG:
    """VGG-13 with BatchNorm: 9.46M parameters, 512 features."""
    return VGG(depth=13, num_classes=num_classes, **kwargs)


@register_model
def vgg16(num_classes: int = 100, **kwargs: Any) -> VGG:
    """VGG-16 with BatchNorm: 14.77M parameters, 512 features."""
    return VGG(depth=16, num_classes=num_classes, **kwargs)


@register_model
def vgg19(num_classes: int = 100, **kwargs: Any) -> VGG:
    """VGG-19 with BatchNorm: 20.09M parameters, 512 features."""
    return VGG(depth=19, num_classes=num_classes, **kwargs)
