"""Moved to :mod:`projkd.experiments.report`; kept so that old imports work."""

from __future__ import annotations

from .experiments.report import report

__all__ = ["report"]
