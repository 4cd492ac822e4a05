"""Writing a run's folder: ``config.json``, ``results.json``, ``results.md``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["save_json", "write_results"]


def save_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON (numpy values as plain numbers).

    The folder is made if needed, and the file is written whole or not at all
    (a temporary file beside it, then renamed): a done marker or a results
    file is never read half-written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=_jsonable) + "\n")
    tmp.replace(path)


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
