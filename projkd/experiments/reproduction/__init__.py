"""``projkd reproduce``: the paper's CIFAR-100 comparison, resumable, in one command.

:func:`reproduce` trains (or loads) a teacher, then distils it into the
student of the pair once per variant and seed -- the student alone, KD,
feature distillation with 0, 1 and 3 projectors, and KD on a logit
projector -- with the reference recipe of the data set, and writes
``results.json``, ``results.md`` and plots into its output folder.

Every run checkpoints each epoch (:class:`~projkd.callbacks.ResumableCheckpoint`,
one file per state, each well under 16 MiB for the CIFAR zoo), so a call
stopped by ``time_budget`` (or killed) continues where it stopped when the
same command is run again, and a finished run (its ``record.json``) is never
redone. Augmentation and shuffling are seeded per epoch, so a resumed run
gives the same weights as an uninterrupted one.

- :mod:`.command`: :func:`reproduce` (arguments, output folder, plan,
  results files);
- :mod:`.subcommand`: the ``projkd reproduce`` subcommand
  (:func:`add_subcommand`), its flags and their defaults;
- :mod:`.settings`: what an output folder was made with (settings, the
  frozen plan, the runs asked for), checked before anything trains;
- :mod:`.planning`: ``--epochs auto``: the warm-up's costs, the plan, its
  predicted phase times beside the measured ones;
- :mod:`.variants`: the variants compared, as estimator parameters;
- :mod:`.runs`: the teacher phase, the students of each seed, their records;
- :mod:`.training`: the time budget, the per-epoch test score, the
  teacher's checkpoint, the fast settings, a finished run's metrics;
- :mod:`.results`: the summary over seeds, the markdown tables, the plots;
- :mod:`.state`: the resumable state as one archive, for a later session on
  another machine (``--resume-from``).

Layout of ``out``::

    settings.json              what the results depend on (checked on re-runs),
                               the frozen --epochs auto plan, the runs asked for
    teacher/                   record.json (done marker, metrics), teacher.pt, ckpt/
    runs/<variant>-seed<s>/    record.json, test_proba.npy, ckpt/ (epoch checkpoints)
    results.json, results.md, reliability.png, accuracy.png
"""

from __future__ import annotations

from .command import DEFAULT_PAIRS, reproduce
from .results import PUBLISHED, format_results, summarize, write_plots
from .runs import TEACHER_SEED
from .subcommand import add_subcommand, run_command
from .training import FAST_SETTINGS, TimeBudget, fast_settings
from .variants import VARIANTS

__all__ = [
    "DEFAULT_PAIRS",
    "FAST_SETTINGS",
    "PUBLISHED",
    "TEACHER_SEED",
    "VARIANTS",
    "TimeBudget",
    "add_subcommand",
    "fast_settings",
    "format_results",
    "reproduce",
    "run_command",
    "summarize",
    "write_plots",
]
