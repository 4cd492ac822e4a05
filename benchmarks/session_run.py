"""One ``gpu_session.sh run`` call: ``projkd reproduce``, then what comes back.

Run: python benchmarks/session_run.py OUT -- REPRODUCE_FLAGS (with --out RUNS)

Runs ``projkd reproduce REPRODUCE_FLAGS`` in this process (one interpreter
start per call), then copies from its output folder RUNS into OUT, within
what a lent machine brings back (at most 8 files of 16 MiB each), whether
the command finished, stopped on its budget or failed:

- ``<dataset>_repro_e<E>.json`` / ``.md``: results.json and results.md, ``E``
  the epochs (the planned ones with ``--epochs auto``; ``auto`` before a plan);
- ``<dataset>_repro_e<E>_reliability.png`` / ``_accuracy.png``: the plots;
- ``<teacher>_e<E>.pt`` and ``.SOURCE.md``: the trained teacher's float32
  ``state_dict`` and its note (recipe, command, accuracy, card, sha256);
- ``state.tar.xz``: everything a later session needs to continue
  (:func:`projkd.experiments.reproduction.state.pack_state`; the teacher's
  ``.pt`` beside it is part of it). When the state needs more than one part
  (``state.tar.xz.0``, ``.1``, ...), the plots are left out first (the next
  call draws them again), then the runs' test probabilities (the next
  call's reliability plot lacks those runs).

``OUT/reproduce.log`` (the card, then this script's output) is written by
``gpu_session.sh``. Exits with the command's status (0: complete, 3: stopped
on the budget, 2: a user error).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

import skorch
import torch

from projkd.experiments.cli import main as projkd_main
from projkd.experiments.io import read_json
from projkd.experiments.reproduction.state import STATE_NAME, pack_state

MAX_FILES = 8  # what the device tool brings back from $OUT


def epochs_label(results: dict[str, Any] | None, settings: dict[str, Any]) -> str:
    """The epochs in the file names: the plan's, the settings', or ``auto``."""
    plan = (results or {}).get("plan") or settings.get("plan")
    if plan:
        return str(plan["epochs"])
    return str(settings.get("epochs", "auto"))


def source_note(results: dict[str, Any], epochs: str, budget: str | None) -> str:
    """The SOURCE note of the trained teacher in ``results``."""
    t, s = results["teacher"], results["settings"]
    arch = s["pair"].split(":")[0]
    deviations = results["deviations"] or "none"
    command = f"--epochs {s['epochs']}"
    if s["epochs"] == "auto":
        command += f" --time-budget {budget} (planned: {epochs} epochs)"
    return f"""# {arch} teacher for {s["dataset"]}, {epochs} epochs

- weights: float32 state_dict of projkd.models.get_model("{arch}"),
  load with projkd.teacher.load_teacher(model, path)
- sha256: {t["sha256"]}
- test top-1 {100 * t["test_acc"]:.2f}%, top-5 {100 * t["test_top5"]:.2f}%
  (final epoch; best epoch {100 * t.get("best_test_acc", float("nan")):.2f}%),
  train accuracy {100 * t["train_acc"]:.2f}%
- training images: {s["subset"] or "all"}
- recipe (CIFAR-100): SGD lr 0.05, momentum 0.9, weight decay 5e-4, batch 64,
  lr x 0.1 at 5/8, 6/8 and 7/8 of {epochs} epochs, random crop 32 (pad 4, black)
  + horizontal flip, normalised with the CIFAR-100 mean/std; seed {t.get("seed")};
  deviations: {deviations}
- fast settings: {results["fast_settings"]["applied"] or "none"}
- card: {results["device"]}
- command: projkd reproduce --dataset {s["dataset"]} --pair {s["pair"]} {command}
  (benchmarks/gpu_session.sh)
"""


def collect(runs: Path, out: Path, budget: str | None = None) -> list[str]:
    """Write the files of one call into ``out``; the lines to report."""
    lines: list[str] = []
    settings_path = runs / "settings.json"
    if not settings_path.is_file():
        return [f"nothing to bring back: {runs} holds no settings.json"]
    settings = read_json(settings_path, "the settings file")
    results_path = runs / "results.json"
    results = (
        read_json(results_path, "the results file") if results_path.is_file() else None
    )
    epochs = epochs_label(results, settings)
    name = f"{settings['dataset']}_repro_e{epochs}"
    plots = []
    if results is not None:
        shutil.copyfile(results_path, out / f"{name}.json")
        shutil.copyfile(runs / "results.md", out / f"{name}.md")
        for png in ("reliability", "accuracy"):
            if (runs / f"{png}.png").is_file():
                plots.append(out / f"{name}_{png}.png")
                shutil.copyfile(runs / f"{png}.png", plots[-1])
    teacher = (results or {}).get("teacher")
    beside = teacher is not None and teacher.get("source") == "trained"
    if beside:
        arch = settings["pair"].split(":")[0]
        shutil.copyfile(runs / "teacher" / "teacher.pt", out / f"{arch}_e{epochs}.pt")
        (out / f"{arch}_e{epochs}.SOURCE.md").write_text(
            source_note(results or {}, epochs, budget)
        )
    others = [
        p for p in out.iterdir() if p not in plots and not p.name.startswith(STATE_NAME)
    ]
    packed = pack_state(
        runs,
        out / STATE_NAME,
        teacher_weights=not beside,
        max_parts=max(1, MAX_FILES - len(others)),
    )
    lines.append(
        f"state: {', '.join(packed['files'])}, {packed['size'] / 2**20:.2f} MiB"
        + (" (the teacher's .pt beside it is part of it)" if beside else "")
    )
    if packed["left_out"]:
        lines.append(f"left out of the state: {', '.join(packed['left_out'])}")
    while len(list(out.iterdir())) > MAX_FILES and plots:
        plots.pop().unlink()
        lines.append("a plot left out (over 8 files); the next call draws it again")
    if len(list(out.iterdir())) > MAX_FILES:
        lines.append(f"WARNING: more than {MAX_FILES} files in {out}; some stay behind")
    return lines


def main() -> int:
    out, flags = Path(sys.argv[1]), sys.argv[2:]
    if flags[:1] == ["--"]:
        flags = flags[1:]
    known = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    known.add_argument("--out", type=Path, required=True)
    known.add_argument("--time-budget")
    args, _ = known.parse_known_args(flags)
    print(f"torch {torch.__version__}, skorch {skorch.__version__}", flush=True)
    try:
        status = projkd_main(["reproduce", *flags])
    except SystemExit as stop:  # a user error: one line printed, status 2
        status = stop.code if isinstance(stop.code, int) else 1
    finally:  # even after a crash, what has run comes back
        sys.stdout.flush()
        out.mkdir(parents=True, exist_ok=True)
        for line in collect(args.out, out, args.time_budget):
            print(line)
    print(f"reproduce exit status {status} (0: complete, 3: stopped on the budget)")
    return status


if __name__ == "__main__":
    sys.exit(main())
