"""The variants ``projkd reproduce`` compares, as estimator parameters.

The student alone, KD, feature distillation with 0, 1 and 3 projectors, KD
on a logit projector (the paper's comparison), DKD and DIST with and
without a logit projector, KD and DKD with logit standardization, and the
normalised projector (SRD): each with its authors' CIFAR-100 recipe. A
variant whose recipe has its own temperature names it (``temperature``);
the others use the estimator's default, ``T = 4``.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from ...losses import DISTLoss, DKDLoss, KDLoss

__all__ = ["DKD_BETA", "VARIANTS", "variant_params"]

# name -> ProjectorDistiller parameters (METHOD.md; T = 4 is the default)
VARIANTS: dict[str, dict[str, Any]] = {
    "alone": dict(ce_weight=1.0, kd_weight=0.0, feature_weight=0.0, n_projectors=0),
    "kd": dict(ce_weight=0.1, kd_weight=0.9, feature_weight=0.0, n_projectors=0),
    "fd0": dict(ce_weight=1.0, kd_weight=0.0, feature_weight=25.0, n_projectors=0),
    "fd1": dict(ce_weight=1.0, kd_weight=0.0, feature_weight=25.0, n_projectors=1),
    "fd3": dict(ce_weight=1.0, kd_weight=0.0, feature_weight=25.0, n_projectors=3),
    "kd_lp": dict(
        ce_weight=0.1,
        kd_weight=0.9,
        feature_weight=0.0,
        n_projectors=0,
        logit_projector=True,
        logit_projector_init="identity",
    ),
    # the authors' CIFAR-100 recipes: DKD (mdistiller) CE 1, alpha 1, T 4,
    # warm-up over 20 of 240 epochs, beta per pair (DKD_BETA); DIST (the
    # authors' dist_cifar.yaml) CE 1, loss weight 2, beta = gamma = 1, T 4
    "dkd": dict(
        ce_weight=1.0,
        kd_weight=1.0,
        feature_weight=0.0,
        n_projectors=0,
        logit_loss=DKDLoss(alpha=1.0, beta=8.0, warmup=20 / 240),
    ),
    "dist": dict(
        ce_weight=1.0,
        kd_weight=2.0,
        feature_weight=0.0,
        n_projectors=0,
        logit_loss=DISTLoss(beta=1.0, gamma=1.0),
    ),
}
# the same with a logit projector (the loss on its output, CE on the raw logits)
VARIANTS.update(
    {
        f"{name}_lp": dict(
            VARIANTS[name], logit_projector=True, logit_projector_init="identity"
        )
        for name in ("dkd", "dist")
    }
)
# logit standardization (Sun et al., CVPR 2024; sunshangquan/logit-standardization-KD,
# README and tools/train.py: --logit-stand --base-temp 2 --kd-weight 9): KD's
# weight 9 with CE 0.1 at base temperature 2; DKD's alpha and beta times 9
# (here kd_weight 9, the same loss), CE 1, T 2, the warm-up and the pair's beta
# kept (the README's recipe for every pair; the authors' wrn_40_2 -> wrn_16_2
# DKD log is named with weight 12). The normalised projector (Miles &
# Mikolajczyk, AAAI 2024, as torchdistill's SRD recipe): CE 1, KD at T 1,
# 2 x the SRD term through one plain Linear(d_s, d_t) projector
VARIANTS.update(
    {
        "kd_ls": dict(
            VARIANTS["kd"],
            kd_weight=9.0,
            temperature=2.0,
            logit_loss=KDLoss(standardize=True),
        ),
        "dkd_ls": dict(
            VARIANTS["dkd"],
            kd_weight=9.0,
            temperature=2.0,
            logit_loss=DKDLoss(alpha=1.0, beta=8.0, warmup=20 / 240, standardize=True),
        ),
        "srd": dict(
            ce_weight=1.0,
            kd_weight=1.0,
            temperature=1.0,
            feature_weight=2.0,
            feature_loss="srd",
            n_projectors=1,
            projector=nn.Linear,
        ),
    }
)
#: DKD's beta per teacher:student pair (mdistiller's configs/cifar100/dkd/*.yaml);
#: 8 for every other pair
DKD_BETA = {
    "wrn_40_2:wrn_16_2": 6.0,
    "wrn_40_2:wrn_40_1": 6.0,
    "vgg13:vgg8": 6.0,
    "vgg13:mobilenetv2": 6.0,
    "resnet56:resnet20": 2.0,
    "resnet110:resnet32": 2.0,
}


def variant_params(
    variant: str, teacher_arch: str, student_arch: str
) -> dict[str, Any]:
    """The estimator parameters of ``variant`` for this pair (DKD's beta is
    the authors' for the pair, :data:`DKD_BETA`); loss objects are copies."""
    params = dict(VARIANTS[variant])
    loss = params.get("logit_loss")
    if loss is not None:
        params["logit_loss"] = loss = copy.deepcopy(loss)
        if isinstance(loss, DKDLoss):
            loss.set_params(beta=DKD_BETA.get(f"{teacher_arch}:{student_arch}", 8.0))
    return params
