"""Batch-level data augmentation that runs on the estimator's device.

Passed to :class:`~projkd.ProjectorDistiller` as ``train_transform``, it
augments each training batch as a whole (no per-sample Python loop), and the
teacher sees exactly the augmented view the student sees. Evaluation never
augments.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["RandomCropFlip"]


class RandomCropFlip(nn.Module):
    """Random crop with zero padding and random horizontal flip, per sample.

    The CIFAR recipe: pad by ``padding`` on each side, crop back to the
    original size at an offset drawn independently for each sample, and flip
    each sample left-right with probability ``flip_probability``.

    Parameters
    ----------
    padding : int, default=4
    flip_probability : float, default=0.5

    Examples
    --------
    >>> import torch
    >>> augment = RandomCropFlip(padding=4)
    >>> augment(torch.rand(8, 3, 32, 32)).shape
    torch.Size([8, 3, 32, 32])
    """

    def __init__(self, padding: int = 4, flip_probability: float = 0.5) -> None:
        super().__init__()
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}.")
        if not 0.0 <= flip_probability <= 1.0:
            raise ValueError(
                f"flip_probability must be in [0, 1], got {flip_probability}."
            )
        self.padding = padding
        self.flip_probability = flip_probability

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
        padded = F.pad(x, (p, p, p, p)) if p else x
        batch = torch.arange(n, device=device)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
        return out.permute(0, 3, 1, 2).contiguous()

    def extra_repr(self) -> str:
        return f"padding={self.padding}, flip_probability={self.flip_probability}"
