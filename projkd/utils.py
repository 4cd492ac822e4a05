"""Small utilities of every layer: seeding a fit, reading a signature.

A leaf module: it imports nothing of projkd.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from numbers import Integral
from typing import Any

import torch
from sklearn.utils import check_random_state

__all__ = ["seeded", "takes_argument"]


@contextmanager
def seeded(random_state: Any, device: str | torch.device | None) -> Iterator[None]:
    """Seed torch's generators inside the block and restore them afterwards.

    Parameters
    ----------
    random_state : None, int or numpy.random.RandomState
        ``None`` leaves torch's global generators alone.
    device : str, torch.device or None
        The CUDA device whose generator is forked as well, if any.
    """
    if random_state is None:
        yield
        return
    if isinstance(random_state, Integral):
        seed = int(random_state)
    else:
        seed = int(check_random_state(random_state).randint(0, 2**31 - 1))
    devices = []
    if device is not None and torch.device(device).type == "cuda":
        devices = [torch.device(device).index or 0]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def takes_argument(factory: Any, name: str) -> bool:
    """Whether ``factory``'s signature names ``name`` (not just ``**kwargs``)."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no signature to read (some builtins)
        return False
    parameter = parameters.get(name)
    return parameter is not None and parameter.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )
