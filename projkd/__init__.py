"""projkd: projector-ensemble knowledge distillation as a scikit-learn estimator."""

from .distiller import DistillationOutput, NonFiniteLossError, ProjectorDistiller
from .projectors import ProjectorEnsemble

__version__ = "0.1.0"

__all__ = [
    "DistillationOutput",
    "NonFiniteLossError",
    "ProjectorDistiller",
    "ProjectorEnsemble",
    "__version__",
]
