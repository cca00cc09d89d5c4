"""Dice-family overlap losses on softmax probabilities: linear Dice, log Dice, generalised Dice, soft IoU.

All of them compute, per sample ``b`` and class ``i``, over the voxels ``x`` of that sample:
``I = sum_x p_i(x) r_i(x)``, ``P = sum_x p_i(x)``, ``R = sum_x r_i(x)`` with ``p`` the softmax of the logits
and ``r`` the one-hot target. Scores are per sample (never pooled over the batch), so the 'mean' of a
batch equals the mean of its per-sample losses.
"""
from __future__ import annotations

import torch
from torch import nn

from ._utils import (
    check_positive,
    check_non_negative,
    check_reduction,
    classwise_per_sample,
    overlap_sums,
    prepare,
    present_mask,
    reduce_classwise,
    reduce_plain,
    safe_pow,
)

_SHAPES = """
    Inputs:
        logits: ``[B, C, *spatial]`` raw scores (any number of spatial dims, e.g. ``[B, C, D, H, W]``);
            the softmax over ``C`` is applied inside.
        target: integer labels ``[B, *spatial]`` or ``[B, 1, *spatial]`` in ``[0, C-1]``, or one-hot
            ``[B, C, *spatial]``.
"""


def _dice_scores(logits, target, include_background, smooth):
    logits, onehot = prepare(logits, target)
    inter, psum, rsum = overlap_sums(torch.softmax(logits, 1), onehot, include_background)
    # smooth in both numerator and denominator keeps 0/0 (class absent from target and prediction) defined;
    # such a class scores smooth / (sum p + smooth), i.e. near 1 only when the prediction gives it ~no mass
    return (2.0 * inter + smooth) / (psum + rsum + smooth), rsum


def dice_loss(logits, target, *, include_background=True, ignore_absent=False, smooth=1e-5, reduction="mean"):
    """Functional form of :class:`DiceLoss`."""
    check_reduction(reduction)
    dice, rsum = _dice_scores(logits, target, include_background, check_positive("smooth", smooth))
    return reduce_classwise(1.0 - dice, present_mask(rsum, ignore_absent), reduction)


def log_dice_loss(
    logits, target, *, gamma=1.0, include_background=True, ignore_absent=False, smooth=1.0, reduction="mean"
):
    """Functional form of :class:`LogDiceLoss`."""
    check_reduction(reduction)
    gamma = check_non_negative("gamma", gamma)
    dice, rsum = _dice_scores(logits, target, include_background, check_positive("smooth", smooth))
    # -ln(Dice) is 0 for a perfect Dice; safe_pow keeps the gradient of x**gamma finite there (gamma < 1)
    return reduce_classwise(safe_pow(-torch.log(dice), gamma), present_mask(rsum, ignore_absent), reduction)


def iou_loss(logits, target, *, include_background=True, ignore_absent=False, smooth=1e-5, reduction="mean"):
    """Functional form of :class:`IoULoss`."""
    check_reduction(reduction)
    smooth = check_positive("smooth", smooth)
    logits, onehot = prepare(logits, target)
    inter, psum, rsum = overlap_sums(torch.softmax(logits, 1), onehot, include_background)
    # the soft union P + R - I cannot be below I; the clamp only absorbs float rounding
    union = (psum + rsum - inter).clamp(min=0.0)
    iou = (inter + smooth) / (union + smooth)
    return reduce_classwise(1.0 - iou, present_mask(rsum, ignore_absent), reduction)


def generalized_dice_loss(
    logits, target, *, include_background=True, ignore_absent=False, smooth=1e-5, reduction="mean"
):
    """Functional form of :class:`GeneralizedDiceLoss`."""
    check_reduction(reduction)
    smooth = check_positive("smooth", smooth)
    logits, onehot = prepare(logits, target)
    inter, psum, rsum = overlap_sums(torch.softmax(logits, 1), onehot, include_background)
    absent = rsum <= 0
    # w = 1 / R**2 is infinite for a class absent from the sample's target; inf * 0 would then make the
    # score NaN. Such a class gets instead the largest weight of the sample's present classes (as MONAI
    # does): any probability the network puts on it is a pure false positive and should cost as much as
    # an error on the rarest present class. With ignore_absent it gets weight 0 (dropped from both sums).
    # A sample whose target has no counted class at all ends with all weights 0: the score is
    # smooth / smooth = 1 and the loss 0, with a zero (finite) gradient.
    # (the clamp bounds w by 1e12 for tiny soft-label volumes; hard labels have sum_x r >= 1 anyway)
    weights = torch.where(absent, torch.zeros_like(rsum), 1.0 / rsum.clamp(min=1e-6).square())
    if not ignore_absent:
        largest = weights.max(dim=1, keepdim=True).values
        weights = torch.where(absent, largest.expand_as(weights), weights)
    weights = weights.detach()  # weights come from the target only; no gradient flows through them
    numer = 2.0 * (weights * inter).sum(1) + smooth
    denom = (weights * (psum + rsum)).sum(1) + smooth
    return reduce_plain(1.0 - numer / denom, reduction)


class DiceLoss(nn.Module):
    __doc__ = """Linear (soft) Dice loss, averaged over classes: ``L = E_i[1 - Dice_i]``.

    Milletari et al., "V-Net", 3DV 2016; the multi-class mean form is the "linear Dice" baseline of
    Wong et al., "3D Segmentation with Exponential Logarithmic Loss for Highly Unbalanced Object Sizes",
    MICCAI 2018.

    ``Dice_i = (2 sum_x p_i r_i + smooth) / (sum_x p_i + sum_x r_i + smooth)`` per sample and class.
    """ + _SHAPES + """
    Args:
        include_background: keep class 0 in the class mean (the softmax always spans all classes).
        ignore_absent: exclude from the mean every (sample, class) pair whose class has no voxel in that
            sample's target. Without it, such a class scores ``smooth / (sum_x p_i + smooth)``, near 0 for
            any soft prediction, so it adds an almost constant loss of about 1 per absent class. The mean is
            then taken per sample over its present classes, then over samples (a sample with no present
            class counts 0). Note that false positives of absent classes are then no longer penalised by
            this term.
        smooth: added to numerator and denominator (> 0); 1e-5 matches MONAI's default.
        reduction: 'mean' (over samples and classes), 'sum' (over samples and classes) or 'none':
            a ``[B, C]`` tensor (``[B, C-1]`` without background) of per-sample, per-class terms
            ``1 - Dice``, with ignored pairs set to 0.
    """

    def __init__(self, include_background=True, ignore_absent=False, smooth=1e-5, reduction="mean"):
        super().__init__()
        self.include_background, self.ignore_absent = bool(include_background), bool(ignore_absent)
        self.smooth, self.reduction = check_positive("smooth", smooth), check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dice_loss(logits, target, include_background=self.include_background,
                         ignore_absent=self.ignore_absent, smooth=self.smooth, reduction=self.reduction)


class LogDiceLoss(nn.Module):
    __doc__ = """Logarithmic Dice loss: ``L = E_i[(-ln Dice_i)^gamma]``.

    Wong et al., MICCAI 2018 (the Dice term of the exponential logarithmic loss, eq. 2); ``gamma = 1``
    is the plain log Dice loss, ``gamma = 0.3`` the ExpLog paper's setting.

    ``Dice_i = (2 sum_x p_i r_i + smooth) / (sum_x p_i + sum_x r_i + smooth)``, smooth = 1 as in the paper.
    For ``gamma < 1`` the base ``-ln Dice_i`` is floored at 1e-20 so the gradient stays finite when
    ``Dice_i = 1`` (see ``_utils.POW_FLOOR``).
    """ + _SHAPES + """
    Args:
        gamma: exponent (>= 0) on ``-ln Dice_i``; below 1 it strengthens the pull on well-segmented classes.
        include_background: keep class 0 in the class mean.
        ignore_absent: as in :class:`DiceLoss`: drop (sample, class) pairs absent from the target.
        smooth: added to numerator and denominator (> 0, default 1).
        reduction: 'mean', 'sum' or 'none' (``[B, C]`` per-sample, per-class terms; ignored pairs 0).
    """

    def __init__(self, gamma=1.0, include_background=True, ignore_absent=False, smooth=1.0, reduction="mean"):
        super().__init__()
        self.gamma = check_non_negative("gamma", gamma)
        self.include_background, self.ignore_absent = bool(include_background), bool(ignore_absent)
        self.smooth, self.reduction = check_positive("smooth", smooth), check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return log_dice_loss(logits, target, gamma=self.gamma, include_background=self.include_background,
                             ignore_absent=self.ignore_absent, smooth=self.smooth, reduction=self.reduction)


class IoULoss(nn.Module):
    __doc__ = """Soft IoU (Jaccard) loss: ``L = E_i[1 - IoU_i]``.

    Rahman & Wang, "Optimizing Intersection-Over-Union in Deep Neural Networks for Image Segmentation",
    ISVC 2016.

    ``IoU_i = (sum_x p_i r_i + smooth) / (sum_x p_i + sum_x r_i - sum_x p_i r_i + smooth)`` per sample and class.
    """ + _SHAPES + """
    Args:
        include_background, ignore_absent: as in :class:`DiceLoss`.
        smooth: added to numerator and denominator (> 0). MONAI's ``DiceLoss(jaccard=True)`` doubles both
            sums, so it equals this loss with ``smooth`` = half of its ``smooth_nr = smooth_dr``.
        reduction: 'mean', 'sum' or 'none' (``[B, C]`` per-sample, per-class terms; ignored pairs 0).
    """

    def __init__(self, include_background=True, ignore_absent=False, smooth=1e-5, reduction="mean"):
        super().__init__()
        self.include_background, self.ignore_absent = bool(include_background), bool(ignore_absent)
        self.smooth, self.reduction = check_positive("smooth", smooth), check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return iou_loss(logits, target, include_background=self.include_background,
                        ignore_absent=self.ignore_absent, smooth=self.smooth, reduction=self.reduction)


class GeneralizedDiceLoss(nn.Module):
    __doc__ = """Generalised Dice loss with inverse-squared-volume class weights.

    Sudre et al., "Generalised Dice overlap as a deep learning loss function for highly unbalanced
    segmentations", DLMIA 2017 (after Crum et al., IEEE TMI 2006).

    Per sample: ``L = 1 - (2 sum_i w_i sum_x p_i r_i + smooth) / (sum_i w_i sum_x (p_i + r_i) + smooth)``
    with ``w_i = 1 / (sum_x r_i)^2``. A class absent from the sample's target (infinite weight) takes the
    largest weight of the sample's present classes, as MONAI's ``GeneralizedDiceLoss`` does.
    """ + _SHAPES + """
    Args:
        include_background: keep class 0 in the sums.
        ignore_absent: give classes absent from the sample's target weight 0 instead (they then drop out
            of both sums, so their false positives are not penalised).
        smooth: added to numerator and denominator (> 0); the weighted sums are of order
            ``1 / volume``, so keep it small (1e-5, MONAI's default).
        reduction: 'mean' (over samples), 'sum' (over samples) or 'none': a ``[B]`` tensor of per-sample losses.
    """

    def __init__(self, include_background=True, ignore_absent=False, smooth=1e-5, reduction="mean"):
        super().__init__()
        self.include_background, self.ignore_absent = bool(include_background), bool(ignore_absent)
        self.smooth, self.reduction = check_positive("smooth", smooth), check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return generalized_dice_loss(logits, target, include_background=self.include_background,
                                     ignore_absent=self.ignore_absent, smooth=self.smooth, reduction=self.reduction)


def dice_terms_per_sample(logits, target, *, include_background, ignore_absent, smooth, gamma=None):
    """[B] per-sample class mean of ``1 - Dice`` (``gamma`` None) or of ``(-ln Dice)^gamma``; for compounds."""
    dice, rsum = _dice_scores(logits, target, include_background, smooth)
    terms = 1.0 - dice if gamma is None else safe_pow(-torch.log(dice), gamma)
    return classwise_per_sample(terms, present_mask(rsum, ignore_absent))
