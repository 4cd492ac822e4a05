"""Data sets ready for :class:`projkd.ProjectorDistiller`."""

from __future__ import annotations

import numpy as np
from sklearn import datasets

__all__ = ["load_digits"]


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled handwritten digits as 8x8 greyscale images.

    The built-in default data of projkd: it ships with scikit-learn, so it
    needs no download.

    Returns
    -------
    X : ndarray of shape (1797, 1, 8, 8), float32
        Pixel intensities scaled to [0, 1].
    y : ndarray of shape (1797,), int64
        The digit, 0 to 9.

    Examples
    --------
    >>> X, y = load_digits()
    >>> X.shape, X.dtype, y[:5]
    ((1797, 1, 8, 8), dtype('float32'), array([0, 1, 2, 3, 4]))
    """
    digits = datasets.load_digits()
    X = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    return X, digits.target.astype(np.int64)
