"""The shape every projkd network shares: features, then a linear head."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

__all__ = ["PooledConvNet"]


class PooledConvNet(nn.Module):
    """A convolutional trunk, global average pooling and a linear classifier.

    ``forward(x) == forward_head(forward_features(x))``, the interface
    :class:`~projkd.ProjectorDistiller` reads penultimate features through.
    Subclasses build ``self.features`` (ending in a ReLU), the linear head
    and ``self.num_features``, or override :meth:`forward_features`;
    :attr:`head_name` names the head (the reference code's names differ from
    family to family, and its checkpoints load by name).
    """

    head_name: ClassVar[str] = "classifier"
    features: nn.Module
    num_features: int

    def forward_features(self, x: Tensor) -> Tensor:
        """The penultimate features: pooled, after the last ReLU."""
        return self.features(x).mean(dim=(2, 3))

    def forward_head(self, features: Tensor) -> Tensor:
        """Logits from penultimate features."""
        head: nn.Module = getattr(self, self.head_name)
        return head(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))
