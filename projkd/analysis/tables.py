"""Comparison tables: the paper's three findings for your own models.

The train/test trade-off (accuracy gap), similarity to the teacher (CKA) and
calibration (ECE, over-confidence), with each network's cost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ..errors import InputError
from ..metrics import (
    expected_calibration_error,
    linear_cka,
    overconfidence,
)
from .cost import NOISY_SPREAD, cost_sentence, is_noisy, model_costs

__all__ = [
    "compare",
    "cost_summary",
    "MarkdownTable",
    "format_markdown",
    "to_dataframe",
]

TEACHER = "teacher"
COLUMNS = (
    "train_acc",
    "test_acc",
    "gap",
    "ece",
    "overconfidence",
    "cka",
    "params",
    "macs",
    "latency_ms",
    "latency_spread",
    "images_per_s",
)


def _row(name: str, train_proba, y_train, test_proba, y_test, classes, n_bins, cka):
    predicted_train = classes[np.asarray(train_proba).argmax(axis=1)]
    predicted_test = classes[np.asarray(test_proba).argmax(axis=1)]
    train_acc = float(np.mean(predicted_train == y_train))
    test_acc = float(np.mean(predicted_test == y_test))
    return {
        "model": name,
        "train_acc": train_acc,
        "test_acc": test_acc,
        "gap": train_acc - test_acc,
        "ece": expected_calibration_error(
            y_test, test_proba, n_bins=n_bins, labels=classes
        ),
        "overconfidence": overconfidence(y_test, test_proba, labels=classes),
        "cka": cka,
    }


def compare(
    distillers: Mapping[str, Any],
    X_train: Any,
    y_train: Any,
    X_test: Any,
    y_test: Any,
    *,
    teacher: bool = True,
    n_bins: int = 15,
    cost: bool = False,
    cost_batch_size: int = 1,
    cost_repeats: int = 20,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Compare fitted distillers (and their teacher) on train and test data.

    Parameters
    ----------
    distillers : mapping of str to fitted ProjectorDistiller
        E.g. ``{"no projector": est0, "3 projectors": est3}``; they should
        share one teacher.
    X_train, y_train, X_test, y_test : array-like
    teacher : bool, default=True
        Add a first row for the teacher (taken from the first distiller).
    n_bins : int, default=15
        Bins of the ECE.
    cost : bool, default=False
        Add each network's cost (see :func:`projkd.analysis.cost.model_costs`):
        ``params``, ``macs`` (multiply-accumulates per image), and
        ``latency_ms``/``images_per_s`` measured at ``cost_batch_size`` on the
        device the network sits on (``batch_size`` and ``device`` recorded),
        every network timed side by side, interleaved, with the spread
        (``latency_spread``). Off by default: timing takes a few seconds per
        network.
    cost_batch_size : int, default=1
        Batch size of the speed measurement.
    cost_repeats : int, default=20
        Timed passes per network (the median is kept).
    progress : callable or None, default=None
        Called with a line naming each phase as it starts (each model's
        accuracy and calibration, its CKA, the cost), e.g. ``print``.

    Returns
    -------
    records : list of dict
        One per model: ``model``, ``train_acc``, ``test_acc``, ``gap`` (train
        minus test), ``ece``, ``overconfidence`` (mean confidence minus
        accuracy) and ``cka`` (linear CKA of penultimate features with the
        teacher's, on the test data; 1 for the teacher itself); with
        ``cost=True`` also the fields of :class:`projkd.analysis.cost.ModelCost`.

    Examples
    --------
    >>> from projkd.analysis import compare, format_markdown
    >>> # records = compare({"3 projectors": est}, X_train, y_train, X_test, y_test)
    >>> # print(format_markdown(records))
    >>> # records = compare({"3 projectors": est}, ..., cost=True)
    >>> # print(cost_summary(records))  # student: 6.0x fewer MACs, ...
    """
    if not distillers:
        raise InputError("compare needs at least one fitted distiller.")
    for name, estimator in distillers.items():
        try:
            check_is_fitted(estimator)
        except NotFittedError:
            raise NotFittedError(
                f"compare: the entry {name!r} ({type(estimator).__name__}) is not "
                "fitted. Fit it first; for a search, pass its best_estimator_, "
                "not the base estimator."
            ) from None
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    report = progress or (lambda phase: None)
    first = next(iter(distillers.values()))
    classes = np.asarray(first.classes_)
    rows: dict[str, dict[str, Any]] = {}
    if teacher:
        report(f"{TEACHER}: accuracy and calibration (train and test sets)")
        rows[TEACHER] = _row(
            TEACHER,
            first.predict_proba_teacher(X_train),
            y_train,
            first.predict_proba_teacher(X_test),
            y_test,
            classes,
            n_bins,
            1.0,
        )
    for name, estimator in distillers.items():
        report(f"{name}: accuracy and calibration (train and test sets)")
        train_proba = estimator.predict_proba(X_train)
        test_proba = estimator.predict_proba(X_test)
        report(f"{name}: CKA with the teacher (test set)")
        cka = linear_cka(
            estimator.transform(X_test), estimator.transform_teacher(X_test)
        )
        rows[name] = _row(
            name,
            train_proba,
            y_train,
            test_proba,
            y_test,
            np.asarray(estimator.classes_),
            n_bins,
            cka,
        )
    if cost:
        networks = {name: est.module_ for name, est in distillers.items()}
        if teacher:
            networks = {TEACHER: first.teacher_, **networks}
        report(
            f"cost: parameters, MACs and latency of {len(networks)} networks "
            f"({cost_repeats} interleaved rounds at batch {cost_batch_size})"
        )
        costs = model_costs(
            networks,
            _input_shape(first, X_test),
            batch_size=cost_batch_size,
            repeats=cost_repeats,
        )
        for name, model_cost in costs.items():
            rows[name] |= model_cost.as_dict()
    return list(rows.values())


def _input_shape(estimator: Any, X: Any) -> tuple[int, ...]:
    """The shape of one sample: what ``fit`` saw, else the first of ``X``."""
    shape = getattr(estimator, "input_shape_", None)
    if shape is None:
        sample = X[0]
        sample = sample[0] if isinstance(sample, tuple | list) else sample
        shape = tuple(np.shape(sample))
    return tuple(int(s) for s in shape)


def cost_summary(records: Sequence[Mapping[str, Any]]) -> str:
    """One line per student: its cost and accuracy relative to the teacher.

    Parameters
    ----------
    records : sequence of dict
        From :func:`compare` with ``teacher=True`` and ``cost=True``.

    Returns
    -------
    summary : str
        E.g. ``"3 projectors: 6.0x fewer MACs, 4.1x faster at batch 1 on
        cpu, -3.2 points"``, one line per student.
    """
    rows = {record["model"]: record for record in records}
    if TEACHER not in rows or "macs" not in rows[TEACHER]:
        raise InputError(
            "cost_summary needs the teacher's row with costs: call "
            "compare(..., teacher=True, cost=True)."
        )
    return "\n".join(
        cost_sentence(rows[TEACHER], record, name=name)
        for name, record in rows.items()
        if name != TEACHER
    )


def to_dataframe(records: Sequence[Mapping[str, Any]]) -> Any:
    """The records as a pandas DataFrame indexed by model (needs pandas)."""
    import pandas as pd

    return pd.DataFrame.from_records(list(records)).set_index("model")


def format_markdown(records: Sequence[Mapping[str, Any]]) -> str:
    """The records as a markdown table; accuracies, gap and ECE in percent.

    Cost columns (from ``compare(..., cost=True)``) show parameters and MACs
    in millions, and a line below the table states the batch size and device
    of the speed measurement.
    """
    percent = {"train_acc", "test_acc", "gap", "ece", "overconfidence"}
    columns = [c for c in COLUMNS if any(c in r for r in records)]
    header = "| model | " + " | ".join(_label(c) for c in columns) + " |"
    lines = [header, "|---|" + "---:|" * len(columns)]
    for record in records:
        cells = []
        for column in columns:
            value = record.get(column)
            if value is None:
                cells.append("")
            elif column in percent:
                cells.append(f"{100 * value:.2f}")
            elif column == "latency_spread":
                noisy = " noisy" if is_noisy(record) else ""
                cells.append(f"{100 * value:.0f}{noisy}")
            elif column in _COST_FORMATS:
                cells.append(_COST_FORMATS[column](value))
            else:
                cells.append(f"{value:.3f}")
        lines.append(f"| {record['model']} | " + " | ".join(cells) + " |")
    speed = [r for r in records if r.get("latency_ms") is not None]
    if speed:
        lines.append(
            f"\nSpeed measured at batch {speed[0]['batch_size']} on "
            f"{speed[0]['device']}, the networks interleaved (median of repeats; "
            "spread: the width of its 95% interval, % of the median, noisy "
            f"above {100 * NOISY_SPREAD:.0f}%); MACs per image."
        )
    return "\n".join(lines)


_COST_FORMATS = {
    "params": lambda v: f"{v / 1e6:.2f}",
    "macs": lambda v: f"{v / 1e6:.1f}",
    "latency_ms": lambda v: f"{v:.2f}",
    "images_per_s": lambda v: f"{v:.0f}",
}


def _label(column: str) -> str:
    return {
        "train_acc": "train acc %",
        "test_acc": "test acc %",
        "gap": "gap %",
        "ece": "ECE %",
        "overconfidence": "over-conf. %",
        "cka": "CKA",
        "params": "params (M)",
        "macs": "MACs (M)",
        "latency_ms": "latency ms",
        "latency_spread": "spread %",
        "images_per_s": "images/s",
    }[column]


class MarkdownTable(str):
    """A markdown table (as :func:`format_markdown` writes it) that notebooks
    and sphinx-gallery show as HTML: ``print`` it for the terminal, or leave
    it as a cell's last expression to see it rendered.

    Examples
    --------
    >>> table = MarkdownTable("| model | test acc % |\\n|---|---:|\\n| a | 90.00 |")
    >>> "<td>a</td>" in table._repr_html_()
    True
    """

    def _repr_html_(self) -> str:
        from html import escape

        rows, notes = [], []
        for line in self.splitlines():
            if not line.startswith("|"):
                if line.strip():
                    notes.append(f"<p>{escape(line.strip())}</p>")
                continue
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if all(set(cell) <= set("-:") for cell in cells):
                continue  # the separator line
            rows.append(cells)
        if not rows:
            return f"<pre>{escape(str(self))}</pre>"
        head = "".join(f"<th>{escape(c)}</th>" for c in rows[0])
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
            for row in rows[1:]
        )
        return (
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            + "".join(notes)
        )
