"""Writing a run's folder: ``config.json``, ``results.json``, ``results.md``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["save_json", "write_results"]


def save_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON (numpy values as plain numbers)."""
    path.write_text(json.dumps(value, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_results(out: Path, records: list[dict[str, Any]], markdown: str) -> None:
    """Save a run's results as JSON and as a markdown table."""
    save_json(out / "results.json", records)
    (out / "results.md").write_text(markdown + "\n")
