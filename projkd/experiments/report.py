"""``projkd report``: the analysis table and plots of saved students."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..analysis import (
    compare,
    cost_summary,
    format_markdown,
    plot_accuracy_curves,
    plot_cka_heatmap,
    plot_reliability_diagrams,
)
from .distillation import load_run
from .io import write_results

__all__ = ["report"]


def report(
    runs: Sequence[str | Path],
    *,
    out: str | Path,
    device: str = "cpu",
    cost: bool = True,
) -> list[Any]:
    """Reload students saved by ``projkd distill`` and compare them.

    Writes ``results.json``/``results.md`` (the :func:`~projkd.analysis.compare`
    table), ``reliability.png``, ``accuracy.png`` and one ``cka_<run>.png``
    per student into ``out``. The runs should share a data set and teacher.
    With ``cost`` (default) the table also gives each network's parameters,
    multiply-accumulates per image and latency/throughput measured at batch
    1 on ``device``, and ``results.md`` ends with one line per student ("6.1x
    fewer MACs, 7.4x faster at batch 1 on cpu, -3.2 points").
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    students, data = {}, None
    for run in runs:
        estimator, data = load_run(run, device=device)
        students[Path(run).name] = estimator
    assert data is not None
    records = compare(
        students, data.X_train, data.y_train, data.X_test, data.y_test, cost=cost
    )
    first = next(iter(students.values()))
    predictions = {"teacher": (data.y_test, first.predict_proba_teacher(data.X_test))}
    predictions.update(
        {
            name: (data.y_test, est.predict_proba(data.X_test))
            for name, est in students.items()
        }
    )
    plot_reliability_diagrams(
        predictions, out / "reliability.png", labels=first.classes_
    )
    plot_accuracy_curves(
        {n: e.history for n, e in students.items()}, out / "accuracy.png"
    )
    sample = data.X_test[:1024]
    for name, estimator in students.items():
        plot_cka_heatmap(
            estimator.module_,
            estimator.teacher_,
            sample,
            out / f"cka_{name}.png",
            device=device,
        )
    table = format_markdown(records)
    if cost:
        table += "\n\n" + cost_summary(records) + "\n"
    write_results(out, records, table)
    return records
