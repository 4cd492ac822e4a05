"""Centered kernel alignment (CKA) between two representations."""

from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, validate_params
from torch import Tensor

from ..errors import InputError
from ._checks import as_numpy, check_features, raise_not_finite

__all__ = ["MinibatchCKA", "hsic", "linear_cka", "rbf_cka"]

_DEBIASED_MIN_SAMPLES = 4


def _centred_float64(X: np.ndarray, name: str) -> np.ndarray:
    """A column-centred float64 copy; the caller's array is left alone."""
    X = X.astype(np.float64)  # the one copy, centred in place
    mean = X.mean(axis=0)
    if not np.isfinite(mean).all():  # a NaN or inf anywhere poisons its column
        raise_not_finite(name)
    X -= mean
    return X


@validate_params(
    {"X": ["array-like"], "Y": ["array-like"], "debiased": ["boolean"]},
    prefer_skip_nested_validation=True,
)
def linear_cka(X: Any, Y: Any, *, debiased: bool = False) -> float:
    """Linear CKA, computed in feature space.

    ``CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` on column-centred
    ``X`` and ``Y``: ``O(n p q)`` time, no ``n x n`` matrix, float64
    throughout. The debiased form replaces HSIC by its unbiased estimator
    (Song et al., 2012), still in feature space.

    Parameters
    ----------
    X : array-like or torch.Tensor of shape (n_samples, p)
    Y : array-like or torch.Tensor of shape (n_samples, q)
        ``p`` and ``q`` may differ.
    debiased : bool, default=False

    Returns
    -------
    cka : float
        In [0, 1] for the biased form; the debiased form can dip slightly
        below 0 for unrelated inputs.

    References
    ----------
    Kornblith, Norouzi, Lee, Hinton. "Similarity of Neural Network
    Representations Revisited", ICML 2019, arXiv:1905.00414.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(50, 4))
    >>> round(linear_cka(X, 3 * X), 6)
    1.0
    """
    X, Y = as_numpy(X), as_numpy(Y)
    min_samples = _DEBIASED_MIN_SAMPLES if debiased else 2
    check_features(X, Y, min_samples=min_samples, check_finite=False)
    X, Y = _centred_float64(X, "X"), _centred_float64(Y, "Y")
    xy = float(np.sum((X.T @ Y) ** 2))
    xx = float(np.sum((X.T @ X) ** 2))  # numpy runs X.T @ X as syrk: half the work
    yy = float(np.sum((Y.T @ Y) ** 2))
    if debiased:
        n = X.shape[0]
        rows_x = np.einsum("ij,ij->i", X, X)
        rows_y = np.einsum("ij,ij->i", Y, Y)
        xy = _debias(xy, rows_x, rows_y, n)
        xx = _debias(xx, rows_x, rows_x, n)
        yy = _debias(yy, rows_y, rows_y, n)
    return _ratio(xy, xx, yy)


def _debias(dot: float, rows_x: np.ndarray, rows_y: np.ndarray, n: int) -> float:
    """Unbiased HSIC of linear kernels (up to a factor common to all pairs)."""
    return (
        dot
        - n / (n - 2.0) * float(rows_x @ rows_y)
        + float(rows_x.sum() * rows_y.sum()) / ((n - 1.0) * (n - 2.0))
    )


def _ratio(xy: float, xx: float, yy: float) -> float:
    denominator = np.sqrt(xx * yy) if xx > 0 and yy > 0 else 0.0
    if denominator == 0.0:
        raise InputError("CKA is undefined: a representation is constant.")
    return float(xy / denominator)


def hsic(K: Tensor, L: Tensor, *, unbiased: bool = False) -> Tensor:
    """HSIC of two ``n x n`` Gram matrices.

    Parameters
    ----------
    K, L : torch.Tensor of shape (n, n)
    unbiased : bool, default=False
        ``False``: ``tr(KHLH) / (n - 1)^2``. ``True``: the unbiased estimator
        of Song et al. (2012), which needs ``n >= 4``.

    Returns
    -------
    hsic : torch.Tensor, scalar
    """
    n = K.shape[0]
    if not unbiased:
        return (_center(K) * _center(L)).sum() / (n - 1) ** 2
    K = K.clone().fill_diagonal_(0)
    L = L.clone().fill_diagonal_(0)
    k_rows, l_rows = K.sum(dim=0), L.sum(dim=0)
    value = (
        (K * L).sum()
        + k_rows.sum() * l_rows.sum() / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (k_rows @ l_rows)
    )
    return value / (n * (n - 3))


def _center(K: Tensor) -> Tensor:
    return K - K.mean(dim=0, keepdim=True) - K.mean(dim=1, keepdim=True) + K.mean()


def _gram_rbf(X: Tensor, threshold: float) -> Tensor:
    dot = X @ X.T
    norms = torch.diagonal(dot)
    squared_distances = (norms[:, None] + norms[None, :] - 2.0 * dot).clamp_min(0)
    # sigma^2 = threshold^2 * median squared distance, the diagonal's zeros
    # included, as in the CKA authors' reference code
    median = _median(squared_distances.flatten())
    if median <= 0:
        raise InputError(
            "The RBF bandwidth is zero: most pairs of samples are identical. "
            "Use linear_cka, or deduplicate the samples."
        )
    return torch.exp(-squared_distances / (2.0 * threshold**2 * median))


def _median(values: Tensor) -> Tensor:
    """numpy's median (mean of the middle two); torch.quantile caps the size."""
    n = values.numel()
    upper = torch.kthvalue(values, n // 2 + 1).values
    if n % 2:
        return upper
    return (torch.kthvalue(values, n // 2).values + upper) / 2


@validate_params(
    {
        "X": ["array-like"],
        "Y": ["array-like"],
        "threshold": [Interval(Real, 0, None, closed="neither")],
        "debiased": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def rbf_cka(X: Any, Y: Any, *, threshold: float = 1.0, debiased: bool = False) -> float:
    """CKA with RBF kernels.

    The bandwidth follows the CKA authors: ``sigma^2 = threshold^2 x`` the
    median squared distance between samples. Needs the ``n x n`` Gram
    matrices; use :class:`MinibatchCKA` or :func:`linear_cka` for large ``n``.

    Parameters
    ----------
    X : array-like or torch.Tensor of shape (n_samples, p)
    Y : array-like or torch.Tensor of shape (n_samples, q)
    threshold : float, default=1.0
    debiased : bool, default=False

    Returns
    -------
    cka : float

    References
    ----------
    Kornblith, Norouzi, Lee, Hinton. "Similarity of Neural Network
    Representations Revisited", ICML 2019, arXiv:1905.00414.
    """
    X = torch.as_tensor(as_numpy(X), dtype=torch.float64)
    Y = torch.as_tensor(as_numpy(Y), dtype=torch.float64)
    check_features(X, Y, min_samples=_DEBIASED_MIN_SAMPLES if debiased else 2)
    K, L = _gram_rbf(X, threshold), _gram_rbf(Y, threshold)
    return _ratio(
        float(hsic(K, L, unbiased=debiased)),
        float(hsic(K, K, unbiased=debiased)),
        float(hsic(L, L, unbiased=debiased)),
    )


class MinibatchCKA:
    """Linear CKA accumulated over minibatches.

    Averages the unbiased HSIC of each minibatch's linear Gram matrices, then
    ``CKA = mean HSIC(K, L) / sqrt(mean HSIC(K, K) * mean HSIC(L, L))``
    (Nguyen, Raghu, Kornblith, 2021). Memory is ``O(batch^2)`` whatever the
    data size, and everything stays on the inputs' device (float64).

    Examples
    --------
    >>> import torch
    >>> cka = MinibatchCKA()
    >>> X = torch.randn(64, 8)
    >>> for batch in X.split(16):
    ...     _ = cka.update(batch, 2 * batch)
    >>> round(cka.compute(), 6)
    1.0

    References
    ----------
    Nguyen, Raghu, Kornblith. "Do Wide and Deep Networks Learn the Same
    Things?", ICLR 2021, arXiv:2010.15327.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> MinibatchCKA:
        """Forget every batch seen so far."""
        self._sums: Tensor | None = None
        self.n_batches = 0
        return self

    def update(self, X: Any, Y: Any) -> MinibatchCKA:
        """Add one minibatch of paired features (at least 4 samples).

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (batch, p)
        Y : array-like or torch.Tensor of shape (batch, q)
        """
        X = _as_float64_tensor(X)
        Y = _as_float64_tensor(Y, device=X.device)
        check_features(X, Y, min_samples=_DEBIASED_MIN_SAMPLES)
        K, L = X @ X.T, Y @ Y.T
        sums = torch.stack(
            [
                hsic(K, L, unbiased=True),
                hsic(K, K, unbiased=True),
                hsic(L, L, unbiased=True),
            ]
        )
        self._sums = sums if self._sums is None else self._sums + sums
        self.n_batches += 1
        return self

    def compute(self) -> float:
        """The CKA of all batches seen since the last :meth:`reset`."""
        if self._sums is None:
            raise InputError("MinibatchCKA.compute() called before any update().")
        xy, xx, yy = (float(v) for v in self._sums)  # means: the count cancels
        return _ratio(xy, xx, yy)


def _as_float64_tensor(values: Any, device: Any = None) -> Tensor:
    if isinstance(values, Tensor):
        return values.detach().to(device=device or values.device, dtype=torch.float64)
    return torch.as_tensor(np.asarray(values), dtype=torch.float64, device=device)
