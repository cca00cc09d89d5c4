"""The exponential logarithmic loss of Wong et al., MICCAI 2018 (the loss the product's model is trained with).

Both terms raise a negative logarithm to a power gamma < 1, whose derivative is infinite at 0. The base
is 0 exactly when the prediction is perfect: Dice_i = 1, or p_l = 1, which a float32 softmax returns as
soon as the logit gap exceeds about 17. Autograd then forms 0 * inf = NaN and one such voxel poisons the
whole update. Two guards keep every gradient finite:

* ``-ln p_l`` comes from ``log_softmax``, never ``log(softmax)``, so it is finite even where the softmax
  underflows to 0 (there ``log`` would give -inf);
* the bases are floored at 1e-20 before the power (``_utils.safe_pow``); below the floor the gradient is 0,
  which is the limit of the exact gradient (it behaves like gamma * x**gamma -> 0).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._utils import (
    broadcast_classes,
    check_non_negative,
    check_positive,
    check_reduction,
    per_sample_voxel_mean,
    prepare,
    reduce_plain,
    safe_pow,
    weights_for,
)
from .crossentropy import resolve_label_weights
from .dice import dice_terms_per_sample


def exp_log_loss(
    logits,
    target,
    *,
    w_dice=0.8,
    w_cross=0.2,
    gamma_dice=0.3,
    gamma_cross=0.3,
    label_weights=None,
    include_background=True,
    ignore_absent=False,
    smooth=1.0,
    reduction="mean",
):
    """Functional form of :class:`ExpLogLoss`."""
    check_reduction(reduction)
    w_dice, w_cross = check_non_negative("w_dice", w_dice), check_non_negative("w_cross", w_cross)
    gamma_dice = check_non_negative("gamma_dice", gamma_dice)
    gamma_cross = check_non_negative("gamma_cross", gamma_cross)
    smooth = check_positive("smooth", smooth)
    logits, onehot = prepare(logits, target)

    dice_term = dice_terms_per_sample(logits, onehot, include_background=include_background,
                                      ignore_absent=ignore_absent, smooth=smooth, gamma=gamma_dice)

    # -ln p_l per voxel, picked by the one-hot product before the power so that only [B, *spatial] (not
    # [B, C, *spatial]) goes through safe_pow; summing a single non-zero entry with zeros is exact, so
    # label and one-hot targets give identical values. (Soft labels get their soft cross-entropy here.)
    nll = -(F.log_softmax(logits, dim=1) * onehot).sum(1)
    cross = safe_pow(nll, gamma_cross)
    weights = weights_for(label_weights, logits.shape[1], logits)
    if weights is not None:
        cross = cross * (onehot * broadcast_classes(weights, onehot.ndim)).sum(1)  # w_l of each voxel
    cross_term = per_sample_voxel_mean(cross)

    return reduce_plain(w_dice * dice_term + w_cross * cross_term, reduction)


class ExpLogLoss(nn.Module):
    """Exponential logarithmic loss.

    Wong, Moradi, Tang, Syeda-Mahmood, "3D Segmentation with Exponential Logarithmic Loss for Highly
    Unbalanced Object Sizes", MICCAI 2018, arXiv:1809.00076.

    ``L = w_dice * L_dice + w_cross * L_cross`` with

    * ``L_dice = E_i[(-ln Dice_i)^gamma_dice]``,
      ``Dice_i = (2 sum_x r_i(x) p_i(x) + smooth) / (sum_x (r_i(x) + p_i(x)) + smooth)``, per sample,
      mean over classes ``i``;
    * ``L_cross = E_x[w_l (-ln p_l(x))^gamma_cross]``, mean over voxels ``x``, ``l`` the true label of
      ``x``, ``p_l`` its softmax probability, ``w_l = ((sum_k f_k) / f_l) ** 0.5`` from the label
      frequencies ``f`` (all 1 when none are given).

    Defaults are the paper's: ``w_dice = 0.8``, ``w_cross = 0.2``, ``gamma_dice = gamma_cross = 0.3``,
    ``smooth = 1``. The gradient stays finite for gamma < 1 even for a perfect prediction (see the module
    docstring).

    Inputs:
        logits: ``[B, C, *spatial]`` raw scores (any number of spatial dims); softmax applied inside.
        target: integer labels ``[B, *spatial]`` or ``[B, 1, *spatial]``, or one-hot ``[B, C, *spatial]``
            (for soft labels the cross term's base is the soft cross-entropy ``-sum_c r_c ln p_c``, weighted
            by ``sum_c r_c w_c``).

    Args:
        w_dice, w_cross: weights (>= 0) of the two terms.
        gamma_dice, gamma_cross: exponents (>= 0) of the two terms.
        label_weights: ``[C]`` weights ``w_l`` of the cross term.
        label_frequencies: ``[C]`` label frequencies (or counts) to derive ``w_l`` from instead.
        power: exponent of that derivation (0.5 in the paper).
        include_background: keep class 0 in the Dice term (the cross term always covers every voxel;
            set ``label_weights[0] = 0`` to drop background voxels from it).
        ignore_absent: drop from the Dice term's class mean every class absent from the sample's
            target (see :class:`~SegLossBrainLib.losses.dice.DiceLoss`).
        smooth: Dice smoothing added to numerator and denominator (> 0, default 1 as in the paper).
        reduction: 'mean' (over samples), 'sum' (over samples), or 'none': a ``[B]`` tensor of
            per-sample losses (each sample's Dice term over its classes, cross term over its voxels).
    """

    def __init__(
        self,
        w_dice=0.8,
        w_cross=0.2,
        gamma_dice=0.3,
        gamma_cross=0.3,
        label_weights=None,
        label_frequencies=None,
        power=0.5,
        include_background=True,
        ignore_absent=False,
        smooth=1.0,
        reduction="mean",
    ):
        super().__init__()
        self.w_dice, self.w_cross = check_non_negative("w_dice", w_dice), check_non_negative("w_cross", w_cross)
        self.gamma_dice = check_non_negative("gamma_dice", gamma_dice)
        self.gamma_cross = check_non_negative("gamma_cross", gamma_cross)
        self.register_buffer("label_weights", resolve_label_weights(label_weights, label_frequencies, power),
                             persistent=False)
        self.include_background, self.ignore_absent = bool(include_background), bool(ignore_absent)
        self.smooth, self.reduction = check_positive("smooth", smooth), check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return exp_log_loss(
            logits, target, w_dice=self.w_dice, w_cross=self.w_cross, gamma_dice=self.gamma_dice,
            gamma_cross=self.gamma_cross, label_weights=self.label_weights,
            include_background=self.include_background, ignore_absent=self.ignore_absent,
            smooth=self.smooth, reduction=self.reduction,
        )
