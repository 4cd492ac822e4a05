"""Tables and plots of :func:`projkd.experiments.reproduce`.

Beside the measured figures: the published numbers of the pair (best-epoch
top-1 after 240 epochs: the CRD benchmark's table, METHOD.md, and DKD's,
DIST's and logit standardization's papers), and for each of the paper's
three findings the figures of ``fd0`` (no projector) against ``fd1``/``fd3``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..io import read_array

__all__ = ["PUBLISHED", "format_results", "summarize", "write_plots"]

# CRD benchmark table (Tian et al., ICLR 2020), CIFAR-100 top-1 %, best epoch;
# DKD: Zhao et al., CVPR 2022, arXiv:2203.08679, Tables 1 and 2 (as in
# mdistiller's README); DIST: Huang et al., NeurIPS 2022, arXiv:2205.10536,
# its CIFAR-100 result for resnet32x4 -> resnet8x4 (its other pairs are not
# listed: not checked against the paper's table); KD+LS and DKD+LS: Sun et
# al., CVPR 2024, arXiv:2403.01427, as in the authors' README
# (sunshangquan/logit-standardization-KD), for the two pairs METHOD.md lists
PUBLISHED: dict[str, dict[str, float]] = {
    "wrn_40_2:wrn_16_2": {
        "teacher": 75.61,
        "student": 73.26,
        "KD": 74.92,
        "FitNet": 73.58,
        "CRD": 75.48,
        "DKD": 76.23,
        "KD+LS": 76.11,
        "DKD+LS": 76.39,
    },
    "wrn_40_2:wrn_40_1": dict(
        teacher=75.61, student=71.98, KD=73.54, FitNet=72.24, CRD=74.14, DKD=74.81
    ),
    "resnet32x4:resnet8x4": {
        "teacher": 79.42,
        "student": 72.50,
        "KD": 73.33,
        "FitNet": 73.50,
        "CRD": 75.51,
        "DKD": 76.32,
        "DIST": 76.31,
        "KD+LS": 76.62,
        "DKD+LS": 77.01,
    },
    "vgg13:vgg8": dict(
        teacher=74.64, student=70.36, KD=72.98, FitNet=71.02, CRD=73.94, DKD=74.68
    ),
    "vgg13:mobilenetv2": dict(
        teacher=74.64, student=64.60, KD=67.37, FitNet=64.14, CRD=69.73, DKD=69.71
    ),
    "resnet50:mobilenetv2": dict(
        teacher=79.34, student=64.60, KD=67.35, FitNet=63.16, CRD=69.11, DKD=70.35
    ),
}
# our rows that the published columns measure
_PUBLISHED_ROWS = {
    "teacher": "teacher",
    "alone": "student",
    "kd": "KD",
    "dkd": "DKD",
    "dist": "DIST",
    "kd_ls": "KD+LS",
    "dkd_ls": "DKD+LS",
}
_METRICS = (
    "test_acc",
    "test_top5",
    "best_test_acc",
    "best_test_top5",
    "train_acc",
    "gap",
    "ece",
    "overconfidence",
    "cka",
    "train_time_s",
    "images_per_s",
)
# (finding, metric, which direction the paper predicts for a projector)
_FINDINGS = (
    (1, "test_acc", "higher"),
    (1, "gap", "lower"),
    (2, "cka", "higher"),
    (3, "ece", "lower"),
    (3, "overconfidence", "lower"),
)
_LABELS = {
    "test_acc": "test top-1 %",
    "test_top5": "test top-5 %",
    "best_test_acc": "best-epoch top-1 %",
    "best_test_top5": "best-epoch top-5 %",
    "train_acc": "train acc %",
    "gap": "gap %",
    "ece": "ECE %",
    "overconfidence": "over-conf. %",
    "cka": "CKA",
    "train_time_s": "train time s",
    "images_per_s": "images/s",
}
_PERCENT = {"test_acc", "test_top5", "best_test_acc", "best_test_top5", "train_acc"}
_PERCENT |= {"gap", "ece", "overconfidence"}


def _mean_std(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "std": std}


def summarize(
    *,
    settings: dict[str, Any],
    variants: list[str],
    seeds: int,
    records: list[dict[str, Any]],
    pending: list[str],
    device_name: str,
    fast_requested: dict[str, Any],
    fast_unavailable: list[str],
) -> dict[str, Any]:
    """Gather the records of one output folder into the results document.

    Returns
    -------
    results : dict
        ``complete``, ``pending``, ``device``, ``settings``, ``fast_settings``,
        ``deviations``, ``teacher``, ``runs``, ``summary`` (per variant, mean
        and std over seeds), ``published`` and ``findings``.
    """
    teacher = next((r for r in records if "variant" not in r), None)
    runs = [r for r in records if "variant" in r]
    summary: dict[str, dict[str, Any]] = {}
    for variant in variants:
        rows = [r for r in runs if r["variant"] == variant]
        if rows:
            summary[variant] = {"n_seeds": len(rows)} | {
                m: _mean_std([r[m] for r in rows if r.get(m) is not None])
                for m in _METRICS
                if any(r.get(m) is not None for r in rows)
            }
    findings = []
    if "fd0" in summary:
        for finding, metric, better in _FINDINGS:
            row: dict[str, Any] = {
                "finding": finding,
                "metric": metric,
                "projector_should_be": better,
                "fd0": summary["fd0"][metric]["mean"],
            }
            for other in ("fd1", "fd3"):
                if other in summary:
                    value = summary[other][metric]["mean"]
                    delta = value - row["fd0"]
                    row[other] = value
                    row[f"{other}_minus_fd0"] = delta
                    row[f"{other}_as_paper"] = bool(
                        delta > 0 if better == "higher" else delta < 0
                    )
            findings.append(row)
    return {
        "complete": not pending,
        "pending": pending,
        "device": device_name,
        "settings": settings,
        "seeds": list(range(seeds)),
        "fast_settings": {
            "requested": fast_requested,
            "applied": settings["fast_settings"],
            "unavailable_in_this_install": fast_unavailable,
        },
        "deviations": settings["deviations"],
        "teacher": teacher,
        "runs": runs,
        "summary": summary,
        "published": PUBLISHED.get(settings["pair"]),
        "findings": findings,
    }


def _cell(metric: str, stats: dict[str, float] | float | None, n: int = 1) -> str:
    if stats is None:
        return "–"
    if isinstance(stats, dict):
        mean, std = stats["mean"], stats["std"]
    else:
        mean, std = float(stats), 0.0
    scale = 100.0 if metric in _PERCENT else 1.0
    digits = 0 if metric == "images_per_s" else 1 if metric == "train_time_s" else 2
    digits = 3 if metric == "cka" else digits
    text = f"{scale * mean:.{digits}f}"
    return text + (f" ± {scale * std:.{digits}f}" if n > 1 else "")


def _plan_lines(results: dict[str, Any]) -> list[str]:
    """The plan of ``--epochs auto`` and this call's use of its budget."""
    lines = []
    plan, budget = results.get("plan"), results.get("budget") or {}
    if plan is not None:
        steps = plan["step_s"]
        lockstep = (
            f"lockstep (a group batch {1e3 * steps['lockstep']:.1f} ms against "
            f"{1e3 * steps['separate']:.1f} ms in separate fits)"
            if plan["lockstep"]
            else "separate fits"
            + (
                f" (a lockstep group batch {1e3 * steps['lockstep']:.1f} ms, "
                f"separate {1e3 * steps['separate']:.1f} ms)"
                if steps["lockstep"] is not None
                else ""
            )
        )
        if steps.get("graphs") is not None:  # measured on CUDA
            lockstep += (
                f"; student steps {'as' if plan.get('graphs') else 'not as'} CUDA "
                f"graphs ({1e3 * steps['graphs']:.1f} ms against "
                f"{1e3 * steps['student']:.1f} ms)"
            )
        lines.append(
            f"- plan: {plan['epochs']} epochs for every network, {lockstep}; "
            f"predicted {plan['predicted_s']:.0f} s of the {plan['budget_s']:g} s "
            f"budget (aiming at {100 * plan['fraction']:.0f}%; an epoch of all "
            f"networks {plan['epoch_s']:.2f} s, measured in a warm-up)"
        )
        achieved = sorted(set((results.get("achieved_epochs") or {}).values()))
        lines.append(
            "- achieved epochs: " + (", ".join(map(str, achieved)) or "none yet")
        )
    if budget.get("seconds") is not None:
        lines.append(
            f"- this call: {budget['used_s']:.0f} s of its {budget['seconds']:g} s "
            f"budget (margin {budget['margin_s']:.0f} s)"
        )
    return lines


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _phase_lines(results: dict[str, Any]) -> list[str]:
    """The seconds of each phase this call ran, beside the plan's prediction
    (``results["phases"]``; nothing when no phase ran)."""
    phases = results.get("phases") or {}
    rows = phases.get("rows") or []
    if not rows:
        return []
    plan = results.get("plan")
    note = ""
    if plan:
        when = "in this call" if phases.get("planned_in_this_call") else "earlier"
        note = (
            f" The plan was made {when}, {plan['planned_at_s']:.1f} s after its "
            "call's start (the interpreter, imports, data and warm-up), "
            f"predicting {plan['predicted_s']:.1f} s in all."
        )
    lines = [
        "",
        "## Phase times: the plan against this call",
        "",
        "Seconds. Fit: building, compiling and every epoch with its test score "
        "and checkpoint; final: the finished run's evaluation." + note,
        "",
        "| phase | fit, planned | fit, measured | final, planned | final, measured |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        cells = [
            _seconds(row[k])
            for k in (
                "predicted_fit_s",
                "measured_fit_s",
                "predicted_final_s",
                "measured_final_s",
            )
        ]
        lines.append(f"| {row['phase']} | " + " | ".join(cells) + " |")
    return lines


def format_results(results: dict[str, Any]) -> str:
    """The results document as markdown: settings, table, published, findings."""
    s = results["settings"]
    teacher_arch, student_arch = s["pair"].split(":")
    plan = results.get("plan")
    epochs = s["epochs"] if plan is None else f"{plan['epochs']} (auto)"
    lines = [
        f"# projkd reproduce: {teacher_arch} -> {student_arch} on {s['dataset']}, "
        f"{epochs} epochs",
        "",
        f"- device: {results['device']}",
        *_plan_lines(results),
        "- fast settings: "
        + (
            ", ".join(
                f"{k}={v}" for k, v in results["fast_settings"]["applied"].items()
            )
            or "none (fp32, eager)"
        )
        + (
            f" (not in this install: {', '.join(u)})"
            if (u := results["fast_settings"]["unavailable_in_this_install"])
            else ""
        ),
        "- recipe: "
        + ("; ".join(results["deviations"]) or "the reference recipe, no deviation"),
        f"- training images: {s['subset'] or 'all'}; seeds: {results['seeds']}",
        "- status: "
        + (
            "complete"
            if results["complete"]
            else f"incomplete, run the same command again (pending: "
            f"{', '.join(results['pending'])})"
        ),
        "",
        "Final epoch is the main figure; the best epoch (selected on the test set)",
        "is shown only to compare with published tables. Mean ± std over seeds.",
        "",
    ]
    columns = list(_METRICS)
    header = [
        "| model | " + " | ".join(_LABELS[c] for c in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    lines += header
    teacher = results["teacher"]
    if teacher is not None:
        cells = [_cell(c, teacher.get(c)) for c in columns]
        lines.append(f"| {teacher['model']} | " + " | ".join(cells) + " |")
    for variant, stats in results["summary"].items():
        n = stats["n_seeds"]
        cells = [_cell(c, stats.get(c), n) for c in columns]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    if len(results["seeds"]) > 1:
        lines += ["", "Per seed:", "", *header]
        for run in results["runs"]:
            cells = [_cell(c, run.get(c)) for c in columns]
            name = f"{run['variant']} (seed {run['seed']})"
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += _published_lines(results)
    lines += _finding_lines(results)
    lines += _phase_lines(results)
    return "\n".join(lines)


def _published_lines(results: dict[str, Any]) -> list[str]:
    published = results["published"]
    if not published:
        return []
    lines = [
        "",
        "## Published (best epoch of 240, mean of 3-5 seeds: the CRD benchmark's "
        "table; DKD, arXiv:2203.08679 Tables 1-2; DIST, arXiv:2205.10536; "
        "KD+LS and DKD+LS, arXiv:2403.01427)",
        "",
        "| model | published top-1 % | here, best epoch % | here, final % |",
        "|---|---:|---:|---:|",
    ]
    rows = {"teacher": results["teacher"]} | results["summary"]
    for ours, theirs in _PUBLISHED_ROWS.items():
        if theirs not in published:
            continue  # no published number for this pair
        row = rows.get(ours)
        best = final = "–"
        if row is not None:
            best = _cell("best_test_acc", row.get("best_test_acc"))
            final = _cell("test_acc", row.get("test_acc"))
        lines.append(
            f"| {ours} ({theirs}) | {published[theirs]:.2f} | {best} | {final} |"
        )
    others = ", ".join(
        f"{k} {v:.2f}"
        for k, v in published.items()
        if k not in _PUBLISHED_ROWS.values()
    )
    lines.append(f"\nOther published methods on this pair: {others}.")
    return lines


def _finding_lines(results: dict[str, Any]) -> list[str]:
    findings = results["findings"]
    if not findings:
        return []
    lines = [
        "",
        "## The paper's findings: projector (fd1, fd3) against none (fd0)",
        "",
        "1: a better train/test trade-off; 2: more of the teacher kept (CKA); "
        "3: less over-confident.",
        "",
        "| finding | metric | projector should be | fd0 | fd1 | fd3 | fd1 − fd0 | "
        "fd3 − fd0 | as the paper says (fd1, fd3) |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in findings:
        metric = row["metric"]
        cells = [_cell(metric, row.get(k)) for k in ("fd0", "fd1", "fd3")]
        deltas = [_cell(metric, row.get(f"{k}_minus_fd0")) for k in ("fd1", "fd3")]
        verdicts = [
            "–"
            if f"{k}_as_paper" not in row
            else ("yes" if row[f"{k}_as_paper"] else "no")
            for k in ("fd1", "fd3")
        ]
        lines.append(
            f"| {row['finding']} | {_LABELS[metric]} | {row['projector_should_be']} | "
            + " | ".join(cells + deltas)
            + f" | {', '.join(verdicts)} |"
        )
    n = len(results["seeds"])
    lines.append(
        f"\nWith {n} seed{'s' if n > 1 else ''}, a difference smaller than the "
        "seed-to-seed spread is no evidence either way."
    )
    return lines


def write_plots(out: Path, results: dict[str, Any], y_test: Any) -> list[str]:
    """Reliability diagrams and test-accuracy curves of the first seed as PNGs.

    Returns the files written; none when matplotlib is not installed.
    """
    try:
        from ...analysis.plots import plot_reliability_diagrams, pyplot, save_figure

        plt = pyplot()
    except ImportError:
        return []
    y_test = np.asarray(y_test)
    folders = {}
    if results["teacher"] is not None:
        folders["teacher"] = (out / "teacher", results["teacher"])
    for run in results["runs"]:
        if run["seed"] == 0:
            folders[run["variant"]] = (out / "runs" / f"{run['variant']}-seed0", run)
    predictions = {}
    for name, (folder, _) in folders.items():
        path = folder / "test_proba.npy"
        if path.exists():  # as the table's ECE
            predictions[name] = (y_test, read_array(path, "the test probabilities"))
    written = []
    if predictions:
        n_classes = next(iter(predictions.values()))[1].shape[1]
        written.append(
            plot_reliability_diagrams(
                predictions, out / "reliability.png", labels=np.arange(n_classes)
            )
        )
    curves = {
        n: r["curve_test_acc"] for n, (_, r) in folders.items() if "curve_test_acc" in r
    }
    if curves:
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for name, curve in curves.items():
            ax.plot(range(1, len(curve) + 1), 100 * np.asarray(curve), label=name)
        ax.set(xlabel="epoch", ylabel="test top-1 %", title="Test accuracy (seed 0)")
        ax.legend(fontsize=7)
        written.append(save_figure(fig, out / "accuracy.png"))
    return [str(Path(p).name) for p in written]
