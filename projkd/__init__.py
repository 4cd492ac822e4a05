"""projkd: projector-ensemble knowledge distillation as a scikit-learn estimator.

The library's layers: the estimator and its pure pieces at the top
(:mod:`.distiller`, :mod:`.losses`, :mod:`.projectors`, :mod:`.features`,
:mod:`.callbacks`, :mod:`.lockstep`, :mod:`.data`, :mod:`.augment`,
:mod:`.export`); :mod:`.teacher` (frozen teacher, its cache and
fingerprints); :mod:`.training` (precision, compilation, device placement,
batching, the epoch's device records); :mod:`.parallel` (data-parallel
training); :mod:`.metrics`; :mod:`.analysis` (tables, plots, cost);
:mod:`.models`; and the application built on them, :mod:`.experiments`
(the command line).
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

from .distiller import DistillationOutput, NonFiniteLossError, ProjectorDistiller
from .errors import InputError, UserError
from .projectors import ProjectorEnsemble

__version__ = "0.2.0"

__all__ = [
    "DistillationOutput",
    "InputError",
    "NonFiniteLossError",
    "ProjectorDistiller",
    "ProjectorEnsemble",
    "UserError",
    "__version__",
]

#: Modules of projkd 0.1.0 that moved, and where they are now. Old imports
#: and estimators pickled by 0.1.0 (which name the classes by their old
#: modules) keep working; importing an old name warns.
MOVED_MODULES = {
    "projkd.accelerate": "projkd.parallel",
    "projkd.batching": "projkd.training.batching",
    "projkd.cli": "projkd.experiments.cli",
    "projkd.compiling": "projkd.training.compiling",
    "projkd.cost": "projkd.analysis.cost",
    "projkd.demo": "projkd.experiments.demo",
    "projkd.device_data": "projkd.training.device",
    "projkd.precision": "projkd.training.precision",
    "projkd.report": "projkd.experiments.report",
    "projkd.teacher_cache": "projkd.teacher",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import an old module name as the module that replaced it."""

    def __init__(self) -> None:
        self._specs: dict[str, object] = {}

    def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]
        if name not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):  # type: ignore[no-untyped-def]
        new = MOVED_MODULES[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new}; import it from there.",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(new)
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module):  # type: ignore[no-untyped-def]
        """The module is the new one, already executed: give it back its own
        spec, which the import machinery replaced with the old name's."""
        module.__spec__ = self._specs.pop(module.__spec__.name)


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())
