"""Compound losses: Dice + cross-entropy and Dice + focal, each term computed per sample and summed."""
from __future__ import annotations

import torch
from torch import nn

from ._utils import (
    check_non_negative,
    check_positive,
    check_reduction,
    per_sample_voxel_mean,
    prepare,
    reduce_plain,
)
from .crossentropy import resolve_label_weights, weighted_ce_per_voxel
from .dice import dice_terms_per_sample
from .focal import FocalLoss, focal_per_voxel

_SHAPES = """
    Inputs:
        logits: ``[B, C, *spatial]`` raw scores (any number of spatial dims); softmax applied inside.
        target: integer labels ``[B, *spatial]`` or ``[B, 1, *spatial]``, or one-hot ``[B, C, *spatial]``.
"""

_DICE_ARGS = """
        include_background: keep class 0 in the Dice term (the voxel-wise term always covers every voxel).
        ignore_absent: drop classes absent from the sample's target from the Dice term's class mean
            (see :class:`~SegLossBrainLib.losses.dice.DiceLoss`).
        smooth: Dice smoothing added to numerator and denominator (> 0; 1e-5 as MONAI's default).
        reduction: 'mean' (over samples), 'sum' (over samples), or 'none': a ``[B]`` tensor of per-sample
            losses (Dice term over the sample's classes + voxel term over its voxels)."""


def dice_ce_loss(
    logits, target, *, lambda_dice=1.0, lambda_ce=1.0, label_weights=None, include_background=True,
    ignore_absent=False, smooth=1e-5, reduction="mean",
):
    """Functional form of :class:`DiceCELoss`."""
    check_reduction(reduction)
    lambda_dice, lambda_ce = check_non_negative("lambda_dice", lambda_dice), check_non_negative("lambda_ce", lambda_ce)
    logits, onehot = prepare(logits, target)
    dice = dice_terms_per_sample(logits, onehot, include_background=include_background, ignore_absent=ignore_absent,
                                 smooth=check_positive("smooth", smooth))
    ce = per_sample_voxel_mean(weighted_ce_per_voxel(logits, onehot, label_weights=label_weights))
    return reduce_plain(lambda_dice * dice + lambda_ce * ce, reduction)


def dice_focal_loss(
    logits, target, *, lambda_dice=1.0, lambda_focal=1.0, gamma=2.0, alpha=None, include_background=True,
    ignore_absent=False, smooth=1e-5, reduction="mean",
):
    """Functional form of :class:`DiceFocalLoss`."""
    check_reduction(reduction)
    lambda_dice = check_non_negative("lambda_dice", lambda_dice)
    lambda_focal = check_non_negative("lambda_focal", lambda_focal)
    logits, onehot = prepare(logits, target)
    dice = dice_terms_per_sample(logits, onehot, include_background=include_background, ignore_absent=ignore_absent,
                                 smooth=check_positive("smooth", smooth))
    focal = per_sample_voxel_mean(focal_per_voxel(logits, onehot, gamma=gamma, alpha=alpha))
    return reduce_plain(lambda_dice * dice + lambda_focal * focal, reduction)


class DiceCELoss(nn.Module):
    __doc__ = """Dice + cross-entropy: ``L = lambda_dice E_i[1 - Dice_i] + lambda_ce E_x[w_l (-ln p_l)]``.

    A common compound baseline (e.g. Isensee et al., nnU-Net, Nature Methods 2021; MONAI ``DiceCELoss``).
    With no label weights it equals MONAI's ``DiceCELoss(to_onehot_y=True, softmax=True)`` for
    ``smooth_nr = smooth_dr = smooth``. Label weights follow
    :class:`~SegLossBrainLib.losses.crossentropy.WeightedCrossEntropyLoss` (mean over voxels, not
    divided by the weight sum) and act on the CE term only.
    """ + _SHAPES + """
    Args:
        lambda_dice, lambda_ce: weights (>= 0) of the two terms.
        label_weights: ``[C]`` class weights of the CE term (default all 1).
        label_frequencies: ``[C]`` label frequencies to derive them from instead (``w = (sum f / f)^power``).
        power: exponent of that derivation (0.5).""" + _DICE_ARGS + """
    """

    def __init__(self, lambda_dice=1.0, lambda_ce=1.0, label_weights=None, label_frequencies=None, power=0.5,
                 include_background=True, ignore_absent=False, smooth=1e-5, reduction="mean"):
        super().__init__()
        self.lambda_dice = check_non_negative("lambda_dice", lambda_dice)
        self.lambda_ce = check_non_negative("lambda_ce", lambda_ce)
        self.register_buffer("label_weights", resolve_label_weights(label_weights, label_frequencies, power),
                             persistent=False)
        self.include_background, self.ignore_absent = bool(include_background), bool(ignore_absent)
        self.smooth, self.reduction = check_positive("smooth", smooth), check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dice_ce_loss(logits, target, lambda_dice=self.lambda_dice, lambda_ce=self.lambda_ce,
                            label_weights=self.label_weights, include_background=self.include_background,
                            ignore_absent=self.ignore_absent, smooth=self.smooth, reduction=self.reduction)


class DiceFocalLoss(nn.Module):
    __doc__ = """Dice + focal: ``L = lambda_dice E_i[1 - Dice_i] + lambda_focal E_x[-alpha_l (1 - p_l)^gamma ln p_l]``.

    Zhu et al., "AnatomyNet", Medical Physics 2019 (Dice + focal for small organs); focal term of Lin et
    al., ICCV 2017 with a softmax, averaged over voxels (MONAI's ``DiceFocalLoss`` averages its focal map
    over classes too, i.e. divides that term by C).
    """ + _SHAPES + """
    Args:
        lambda_dice, lambda_focal: weights (>= 0) of the two terms.
        gamma: focal exponent (>= 0, default 2).
        alpha: None, scalar or ``[C]``, as in :class:`~SegLossBrainLib.losses.focal.FocalLoss`.""" + _DICE_ARGS + """
    """

    def __init__(self, lambda_dice=1.0, lambda_focal=1.0, gamma=2.0, alpha=None, include_background=True,
                 ignore_absent=False, smooth=1e-5, reduction="mean"):
        super().__init__()
        self.lambda_dice = check_non_negative("lambda_dice", lambda_dice)
        self.lambda_focal = check_non_negative("lambda_focal", lambda_focal)
        focal = FocalLoss(gamma=gamma, alpha=alpha)  # validates gamma and alpha once, here
        self.gamma, self.alpha = focal.gamma, focal.alpha
        self.include_background, self.ignore_absent = bool(include_background), bool(ignore_absent)
        self.smooth, self.reduction = check_positive("smooth", smooth), check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dice_focal_loss(logits, target, lambda_dice=self.lambda_dice, lambda_focal=self.lambda_focal,
                               gamma=self.gamma, alpha=self.alpha, include_background=self.include_background,
                               ignore_absent=self.ignore_absent, smooth=self.smooth, reduction=self.reduction)
