"""``projkd report``: the analysis table and plots of saved students."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
from .io import output_folder, write_results

__all__ = ["CKA_IMAGES", "report"]

#: Test images of the layer-by-layer CKA heatmaps.
CKA_IMAGES = 1024


def report(
    runs: Sequence[str | Path],
    *,
    out: str | Path,
    device: str = "cpu",
    cost: bool = True,
    progress: Callable[[str], None] | None = None,
) -> list[Any]:
    """Reload students saved by ``projkd distill`` and compare them.

    Writes ``results.json``/``results.md`` (the :func:`~projkd.analysis.compare`
    table), then ``reliability.png``, ``accuracy.png`` and one
    ``cka_<run>.png`` per student into ``out`` (made first). The runs should
    share a data set and teacher. With ``cost`` (default) the table also
    gives each network's parameters, multiply-accumulates per image and
    latency/throughput measured at batch 1 on ``device``, the networks timed
    side by side, and ``results.md`` ends with one line per student ("6.1x
    fewer MACs, 4.9x faster at batch 1 on cpu, -3.2 points"; "latency
    noisy" when its spread is too wide to call).

    Parameters
    ----------
    runs : sequence of str or Path
        Folders written by :func:`~projkd.experiments.distill`.
    out : str or Path
    device : str, default="cpu"
    cost : bool, default=True
    progress : callable or None, default=None
        Called with a line naming each phase as it starts (loading, each
        model's accuracy and calibration, CKA, cost, plots), e.g. a
        :class:`~projkd.experiments.progress.PhaseLog`.

    Returns
    -------
    records : list of dict
        The rows of the table, the teacher's first.
    """
    log = progress or (lambda phase: None)
    out = output_folder(out)
    students, data = {}, None
    for run in runs:
        log(f"loading the student of {str(run)!r} and its data")
        estimator, data = load_run(run, device=device)
        students[Path(run).name] = estimator
    assert data is not None
    records = compare(
        students,
        data.X_train,
        data.y_train,
        data.X_test,
        data.y_test,
        cost=cost,
        progress=log,
    )
    table = format_markdown(records)
    if cost:
        table += "\n\n" + cost_summary(records) + "\n"
    write_results(out, records, table)  # the table first: the plots may fail
    log("reliability diagrams (test set) and accuracy curves")
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
    sample = data.X_test[:CKA_IMAGES]
    for name, estimator in students.items():
        log(f"{name}: CKA with the teacher, layer by layer ({len(sample)} images)")
        plot_cka_heatmap(
            estimator.module_,
            estimator.teacher_,
            sample,
            out / f"cka_{name}.png",
            device=device,
        )
    return records
