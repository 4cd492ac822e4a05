"""The teacher: frozen for distillation, trained, saved and loaded, and its
outputs cached.

- :mod:`.frozen`: the frozen teacher (a module used as is, or a frozen copy),
  and teachers given as estimators;
- :mod:`.training`: training a teacher with skorch (:class:`TeacherNet`,
  :func:`train_teacher`);
- :mod:`.io`: saving and loading its weights;
- :mod:`.inference`: running it over a data set in large no-grad batches;
- :mod:`.cache`: its outputs computed once and reused;
- :mod:`.fingerprint`: content digests of samples and teachers.
"""

from .cache import (
    DEFAULT_MAX_BYTES,
    cached_teacher_outputs,
    clear_teacher_cache,
    set_teacher_cache_limit,
    teacher_cache_info,
)
from .fingerprint import weights_fingerprint
from .frozen import (
    fit_teacher_estimator,
    freeze_teacher,
    is_frozen_on,
    is_teacher_estimator,
)
from .inference import compute_teacher_outputs
from .io import load_teacher, save_teacher
from .training import TeacherNet, train_teacher

__all__ = [
    "DEFAULT_MAX_BYTES",
    "TeacherNet",
    "cached_teacher_outputs",
    "clear_teacher_cache",
    "compute_teacher_outputs",
    "fit_teacher_estimator",
    "freeze_teacher",
    "is_frozen_on",
    "is_teacher_estimator",
    "load_teacher",
    "save_teacher",
    "set_teacher_cache_limit",
    "teacher_cache_info",
    "train_teacher",
    "weights_fingerprint",
]
