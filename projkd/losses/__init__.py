"""The distillation losses: pure functions on tensors, the objects over them,
and the objective the estimator minimises.

- :mod:`.functional`: :func:`kd_loss`, :func:`dkd_loss`, :func:`dist_loss`
  (and their parts), :func:`feature_loss`; keyword-only options.
- :mod:`.logit`: the logit-loss objects :class:`KDLoss`, :class:`DKDLoss`,
  :class:`DISTLoss` (scikit-learn parameters), and how the estimator's
  ``logit_loss`` is resolved.
- :mod:`.hints`: :func:`hint_loss` between intermediate maps (FitNet's, or
  PEFD's cosine at each position) and :func:`as_positions`.
- :mod:`.objective`: :func:`distillation_loss`, the weighted sum of the
  cross-entropy, logit, feature and hint terms.
"""

from .functional import (
    dist_loss,
    dist_parts,
    dkd_loss,
    dkd_parts,
    feature_loss,
    kd_loss,
)
from .hints import HINT_LOSSES, as_positions, hint_loss, projected_hints
from .logit import (
    LOGIT_LOSSES,
    BoundLogitLoss,
    DISTLoss,
    DKDLoss,
    KDLoss,
    LogitLoss,
    check_logit_loss,
    logit_loss_terms,
    resolve_logit_loss,
)
from .objective import distillation_loss

__all__ = [
    "HINT_LOSSES",
    "LOGIT_LOSSES",
    "BoundLogitLoss",
    "DISTLoss",
    "DKDLoss",
    "KDLoss",
    "LogitLoss",
    "as_positions",
    "check_logit_loss",
    "dist_loss",
    "dist_parts",
    "distillation_loss",
    "dkd_loss",
    "dkd_parts",
    "feature_loss",
    "hint_loss",
    "kd_loss",
    "logit_loss_terms",
    "projected_hints",
    "resolve_logit_loss",
]
