"""Tversky loss (Salehi et al. 2017) and focal Tversky loss (Abraham & Khan 2019).

Per sample and class: ``TP = sum_x p r``, ``FP = sum_x p (1 - r)``, ``FN = sum_x (1 - p) r`` and
``TI = (TP + smooth) / (TP + alpha FP + beta FN + smooth)``; ``alpha`` weighs false positives and
``beta`` false negatives (Salehi's and MONAI's convention). ``alpha = beta = 0.5`` is the Dice loss.
"""
from __future__ import annotations

import torch
from torch import nn

from ._utils import (
    check_non_negative,
    check_positive,
    check_reduction,
    overlap_sums,
    prepare,
    present_mask,
    reduce_classwise,
    safe_pow,
)

_SHAPES = """
    Inputs:
        logits: ``[B, C, *spatial]`` raw scores (any number of spatial dims); softmax applied inside.
        target: integer labels ``[B, *spatial]`` or ``[B, 1, *spatial]``, or one-hot ``[B, C, *spatial]``.
"""

_ARGS = """
        alpha: weight of the false positives (>= 0, default 0.3).
        beta: weight of the false negatives (>= 0, default 0.7; > alpha favours recall of small structures).
        include_background: keep class 0 in the class mean (the softmax always spans all classes).
        ignore_absent: drop every (sample, class) pair whose class has no voxel in the sample's target
            from the mean (as :class:`~SegLossBrainLib.losses.dice.DiceLoss`).
        smooth: added to numerator and denominator (> 0; 1e-5 as MONAI's default).
        reduction: 'mean' (over samples and classes), 'sum', or 'none': ``[B, C]`` (``[B, C-1]`` without
            background) per-sample, per-class terms, with ignored pairs set to 0.
"""


def _tversky_index(logits, target, alpha, beta, include_background, smooth):
    logits, onehot = prepare(logits, target)
    tp, psum, rsum = overlap_sums(torch.softmax(logits, 1), onehot, include_background)
    # FP = sum p - TP and FN = sum r - TP are >= 0 exactly; the clamp absorbs float rounding only,
    # and avoids two more passes over the volume
    fp = (psum - tp).clamp(min=0.0)
    fn = (rsum - tp).clamp(min=0.0)
    return (tp + smooth) / (tp + alpha * fp + beta * fn + smooth), rsum


def _check(alpha, beta, smooth, reduction):
    check_reduction(reduction)
    return check_non_negative("alpha", alpha), check_non_negative("beta", beta), check_positive("smooth", smooth)


def tversky_loss(
    logits, target, *, alpha=0.3, beta=0.7, include_background=True, ignore_absent=False, smooth=1e-5,
    reduction="mean",
):
    """Functional form of :class:`TverskyLoss`."""
    alpha, beta, smooth = _check(alpha, beta, smooth, reduction)
    index, rsum = _tversky_index(logits, target, alpha, beta, include_background, smooth)
    return reduce_classwise(1.0 - index, present_mask(rsum, ignore_absent), reduction)


def focal_tversky_loss(
    logits, target, *, alpha=0.3, beta=0.7, gamma=0.75, include_background=True, ignore_absent=False,
    smooth=1e-5, reduction="mean",
):
    """Functional form of :class:`FocalTverskyLoss`."""
    alpha, beta, smooth = _check(alpha, beta, smooth, reduction)
    gamma = check_non_negative("gamma", gamma)
    index, rsum = _tversky_index(logits, target, alpha, beta, include_background, smooth)
    # 1 - TI is exactly 0 for a perfect prediction, where x**0.75 has an infinite slope: safe_pow floors it
    return reduce_classwise(safe_pow(1.0 - index, gamma), present_mask(rsum, ignore_absent), reduction)


class TverskyLoss(nn.Module):
    __doc__ = """Tversky loss: ``L = E_i[1 - TI_i]``.

    Salehi, Erdogmus, Gholipour, "Tversky loss function for image segmentation using 3D fully
    convolutional deep networks", MLMI 2017 (alpha = 0.3, beta = 0.7 their best setting).

    ``TI_i = (TP_i + smooth) / (TP_i + alpha FP_i + beta FN_i + smooth)`` per sample and class.
    """ + _SHAPES + """
    Args:""" + _ARGS

    def __init__(self, alpha=0.3, beta=0.7, include_background=True, ignore_absent=False, smooth=1e-5,
                 reduction="mean"):
        super().__init__()
        self.alpha, self.beta, self.smooth = _check(alpha, beta, smooth, reduction)
        self.include_background, self.ignore_absent = bool(include_background), bool(ignore_absent)
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return tversky_loss(logits, target, alpha=self.alpha, beta=self.beta,
                            include_background=self.include_background, ignore_absent=self.ignore_absent,
                            smooth=self.smooth, reduction=self.reduction)


class FocalTverskyLoss(nn.Module):
    __doc__ = """Focal Tversky loss: ``L = E_i[(1 - TI_i)^gamma]``.

    Abraham & Khan, "A Novel Focal Tversky Loss Function with Improved Attention U-Net for Lesion
    Segmentation", ISBI 2019.

    Exponent convention: ``gamma`` is applied directly, ``(1 - TI)^gamma``. The paper writes
    ``(1 - TI)^(1/gamma_paper)`` with ``gamma_paper`` in [1, 3] and best 4/3; the default ``gamma = 0.75``
    is that 1 / (4/3). ``gamma < 1`` raises the loss of classes that are already well segmented
    (TI near 1). The base is floored at 1e-20 so the gradient stays finite for a perfect prediction.
    The paper's alpha = 0.7 weighs false negatives: here that is ``beta = 0.7`` (``alpha`` = FP weight).
    """ + _SHAPES + """
    Args:
        gamma: exponent on ``1 - TI`` (>= 0, default 0.75).""" + _ARGS

    def __init__(self, alpha=0.3, beta=0.7, gamma=0.75, include_background=True, ignore_absent=False,
                 smooth=1e-5, reduction="mean"):
        super().__init__()
        self.alpha, self.beta, self.smooth = _check(alpha, beta, smooth, reduction)
        self.gamma = check_non_negative("gamma", gamma)
        self.include_background, self.ignore_absent = bool(include_background), bool(ignore_absent)
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_tversky_loss(logits, target, alpha=self.alpha, beta=self.beta, gamma=self.gamma,
                                  include_background=self.include_background, ignore_absent=self.ignore_absent,
                                  smooth=self.smooth, reduction=self.reduction)
