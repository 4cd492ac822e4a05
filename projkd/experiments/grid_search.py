"""``projkd search``: a cross-validated search over distiller parameters."""

from __future__ import annotations

from typing import Any

from .data import load_data
from .distillation import build_estimator, run_config
from .io import output_folder, write_results
from .spec import RunSpec

__all__ = ["search"]


def search(
    spec: RunSpec,
    grid: dict[str, list[Any]],
    *,
    cv: int = 3,
    n_jobs: int | None = None,
) -> list[dict[str, Any]]:
    """Cross-validated search (accuracy, ECE and CKA) over ``grid``.

    Parameters
    ----------
    spec : RunSpec
        ``teacher_weights`` is required; the student is built under
        ``spec.seed`` and every candidate is fitted with that seed.
    grid : dict
        Parameter name -> values, as for
        :class:`~sklearn.model_selection.GridSearchCV`.
    cv : int, default=3
    n_jobs : int or None, default=None

    Returns
    -------
    rows : list of dict
        Per candidate: its parameters, mean and std of each score.
    """
    from sklearn.model_selection import GridSearchCV

    from ..metrics import SCORERS

    spec = spec.resolve()
    out = output_folder(spec.out)  # before training: a typo costs no search
    data = load_data(
        spec.dataset,
        spec.data_root,
        subset=spec.subset,
        seed=spec.seed,
        download=spec.download,
    )
    estimator = build_estimator(
        run_config(spec), data, spec, callbacks=[], world_size=1
    )
    result = GridSearchCV(
        estimator,
        grid,
        scoring=SCORERS,
        refit="accuracy",
        cv=cv,
        n_jobs=n_jobs,
        verbose=2 if spec.progress else 0,
    ).fit(data.X_train, data.y_train)
    rows = []
    for i, params in enumerate(result.cv_results_["params"]):
        row = {"params": params}
        for name in SCORERS:
            row[f"mean_{name}"] = float(result.cv_results_[f"mean_test_{name}"][i])
            row[f"std_{name}"] = float(result.cv_results_[f"std_test_{name}"][i])
        rows.append(row)
    lines = ["| params | accuracy | ECE | CKA |", "|---|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row['params']} "
            f"| {row['mean_accuracy']:.4f} ± {row['std_accuracy']:.4f} "
            f"| {-row['mean_neg_expected_calibration_error']:.4f} "
            f"| {row['mean_cka']:.4f} |"
        )
    write_results(out, rows, "\n".join(lines))
    return rows
