"""The shape every projkd network shares: features, then a linear head."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["PooledConvNet"]


class PooledConvNet(nn.Module):
    """A convolutional trunk, global average pooling and a linear classifier.

    ``forward(x) == forward_head(forward_features(x))``, the interface
    :class:`~projkd.ProjectorDistiller` reads penultimate features through.
    Subclasses build ``self.features`` (ending in a ReLU), ``self.classifier``
    and ``self.num_features``, or override the two halves.
    """

    features: nn.Module
    classifier: nn.Module
    num_features: int

    def forward_features(self, x: Tensor) -> Tensor:
        """The penultimate features: pooled, after the last ReLU."""
        return self.features(x).mean(dim=(2, 3))

    def forward_head(self, features: Tensor) -> Tensor:
        """Logits from penultimate features."""
        return self.classifier(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))
