"""The distillation losses: pure functions on tensors, the objects over them,
and the objective the estimator minimises.

- :mod:`.functional`: :func:`kd_loss`, :func:`dkd_loss`, :func:`dist_loss`
  (and their parts), each with ``standardize=`` (logit standardization,
  :func:`standardize_logits`); the feature terms :func:`feature_loss`
  (PEFD's cosine) and :func:`srd_loss` (the normalised projector's);
  keyword-only options.
- :mod:`.params`: :class:`LossParameters`, the scikit-learn parameters every
  loss object has, and :func:`build_loss`, which turns the estimator's
  ``logit_loss`` or ``feature_loss`` and its options into a loss.
- :mod:`.logit`: the logit-loss objects :class:`KDLoss`, :class:`DKDLoss`,
  :class:`DISTLoss`, and how the estimator's ``logit_loss`` is resolved.
- :mod:`.feature`: the feature-loss objects :class:`CosineLoss`,
  :class:`SRDLoss`, and how the estimator's ``feature_loss`` is resolved.
- :mod:`.hints`: :func:`hint_loss` between intermediate maps (FitNet's, or
  PEFD's cosine at each position) and :func:`as_positions`.
- :mod:`.objective`: :func:`distillation_loss`, the weighted sum of the
  cross-entropy, logit, feature and hint terms.
"""

from .feature import (
    FEATURE_LOSSES,
    CosineLoss,
    FeatureLoss,
    SRDLoss,
    check_feature_loss,
    resolve_feature_loss,
)
from .functional import (
    dist_loss,
    dist_parts,
    dkd_loss,
    dkd_parts,
    feature_loss,
    kd_loss,
    srd_loss,
    standardize_logits,
)
from .hints import HINT_LOSSES, as_positions, hint_loss
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
from .params import LossParameters, build_loss

__all__ = [
    "FEATURE_LOSSES",
    "HINT_LOSSES",
    "LOGIT_LOSSES",
    "BoundLogitLoss",
    "CosineLoss",
    "DISTLoss",
    "DKDLoss",
    "FeatureLoss",
    "KDLoss",
    "LogitLoss",
    "LossParameters",
    "SRDLoss",
    "as_positions",
    "build_loss",
    "check_feature_loss",
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
    "resolve_feature_loss",
    "resolve_logit_loss",
    "srd_loss",
    "standardize_logits",
]
