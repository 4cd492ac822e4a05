"""Batch-level data augmentation that runs on the estimator's device.

Passed to :class:`~projkd.ProjectorDistiller` as ``train_transform``, it
augments each training batch as a whole (no per-sample Python loop), and the
teacher sees exactly the augmented view the student sees. Evaluation never
augments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["RandomCropFlip"]


class RandomCropFlip(nn.Module):
    """Random crop with constant padding and random horizontal flip, per sample.

    The CIFAR recipe: pad by ``padding`` on each side, crop back to the
    original size at an offset drawn independently for each sample, and flip
    each sample left-right with probability ``flip_probability``.

    The reference code pads the *raw* image with black. Batches reaching the
    estimator are usually normalised already, where black is
    ``-mean / std`` per channel, not 0 (0 is the mean colour): build the
    transform with :meth:`for_normalization` to pad exactly as the reference.

    Parameters
    ----------
    padding : int, default=4
    flip_probability : float, default=0.5
    fill : float or sequence of float, default=0.0
        The padding value, one for all channels or one per channel.

    Examples
    --------
    >>> import torch
    >>> augment = RandomCropFlip(padding=4)
    >>> augment(torch.rand(8, 3, 32, 32)).shape
    torch.Size([8, 3, 32, 32])
    >>> RandomCropFlip.for_normalization((0.5, 0.5), (0.25, 0.5)).fill
    (-2.0, -1.0)
    """

    def __init__(
        self,
        padding: int = 4,
        flip_probability: float = 0.5,
        fill: float | Sequence[float] = 0.0,
    ) -> None:
        super().__init__()
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}.")
        if not 0.0 <= flip_probability <= 1.0:
            raise ValueError(
                f"flip_probability must be in [0, 1], got {flip_probability}."
            )
        self.padding = padding
        self.flip_probability = flip_probability
        self.fill = fill if isinstance(fill, int | float) else tuple(map(float, fill))

    @classmethod
    def for_normalization(
        cls, mean: Sequence[float], std: Sequence[float], **kwargs: Any
    ) -> RandomCropFlip:
        """The transform for batches normalised by ``(x - mean) / std``: it pads
        with black (raw value 0), ``-mean / std`` per channel, as the reference
        pads raw images before normalising."""
        fill = tuple(-m / s for m, s in zip(mean, std, strict=True))
        return cls(fill=fill, **kwargs)

    def _pad(self, x: Tensor) -> Tensor:
        p = self.padding
        n, c, h, w = x.shape
        fill = (self.fill,) if isinstance(self.fill, int | float) else self.fill
        if len(fill) not in (1, c):
            raise ValueError(
                f"fill has {len(fill)} values but the batch has {c} channels; "
                "give one value, or one per channel."
            )
        padded = x.new_empty(n, c, h + 2 * p, w + 2 * p)
        # filled from Python numbers: no host-to-device copy per batch
        for channel, value in enumerate(fill * c if len(fill) == 1 else fill):
            padded[:, channel].fill_(value)
        padded[:, :, p : p + h, p : p + w] = x
        return padded

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise ValueError(
                f"RandomCropFlip takes (N, C, H, W) batches, got {tuple(x.shape)}."
            )
        n, _, h, w = x.shape
        p = self.padding
        device = x.device
        # one gather does crop and flip: column j of a flipped sample reads
        # column (w - 1 - j) of its crop window
        rows = torch.randint(0, 2 * p + 1, (n, 1), device=device) + torch.arange(
            h, device=device
        )
        cols = torch.arange(w, device=device).expand(n, w)
        flip = torch.rand(n, 1, device=device) < self.flip_probability
        cols = torch.where(flip, w - 1 - cols, cols)
        cols = cols + torch.randint(0, 2 * p + 1, (n, 1), device=device)
        padded = self._pad(x) if p else x
        batch = torch.arange(n, device=device)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
        return out.permute(0, 3, 1, 2).contiguous()

    def extra_repr(self) -> str:
        return (
            f"padding={self.padding}, flip_probability={self.flip_probability}, "
            f"fill={self.fill}"
        )
