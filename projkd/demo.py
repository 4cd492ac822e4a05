"""Moved to :mod:`projkd.experiments.demo`; kept so that old imports work."""

from __future__ import annotations

from .experiments.demo import VARIANTS, main, run_demo, summarize

__all__ = ["VARIANTS", "main", "run_demo", "summarize"]
