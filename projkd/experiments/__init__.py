"""The application layer: what the ``projkd`` commands run.

One module per command (:mod:`.teacher` for ``train-teacher``,
:mod:`.distillation` for ``distill``, :mod:`.grid_search` for ``search``,
:mod:`.report`, :mod:`.demo`, the package :mod:`.reproduction` for
``reproduce``),
over the shared pieces: :mod:`.data` (data sets by name), :mod:`.recipes`
(the reference training recipes),
:mod:`.spec` (:class:`RunSpec`, the one run specification every command
takes), :mod:`.tracking` (per-epoch records) and :mod:`.io` (result files).
:class:`TeacherNet` is the library's :class:`projkd.teacher.TeacherNet`.
The library (estimator, losses, projectors, metrics, models, data) never
imports from here.
"""

from __future__ import annotations

from .data import DATASETS, DEFAULT_ARCHS, Data, load_data
from .distillation import distill, distiller_setup, load_run
from .grid_search import search
from .io import write_results
from .recipes import default_epochs, recipe, scaled_milestones
from .reproduction import reproduce
from .spec import FAST_SETTINGS, RunSpec, build_model, launched_world_size, speed_kwargs
from .teacher import TeacherNet, train_teacher_run

__all__ = [
    "DATASETS",
    "DEFAULT_ARCHS",
    "FAST_SETTINGS",
    "Data",
    "RunSpec",
    "TeacherNet",
    "build_model",
    "default_epochs",
    "distill",
    "distiller_setup",
    "launched_world_size",
    "load_data",
    "load_run",
    "recipe",
    "reproduce",
    "scaled_milestones",
    "search",
    "speed_kwargs",
    "train_teacher_run",
    "write_results",
]
