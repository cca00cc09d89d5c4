"""Sensitivity-specificity loss of Brosch et al., MICCAI 2015, one binary problem per class."""
from __future__ import annotations

import torch
from torch import nn

from ._utils import check_positive, check_reduction, prepare, reduce_classwise, spatial_dims


def sensitivity_specificity_loss(logits, target, *, r=0.05, include_background=True, smooth=1e-5,
                                 reduction="mean"):
    """Functional form of :class:`SensitivitySpecificityLoss`."""
    check_reduction(reduction)
    r = float(r)
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"r must lie in [0, 1], got {r}")
    smooth = check_positive("smooth", smooth)
    logits, onehot = prepare(logits, target)
    probs = torch.softmax(logits, 1)
    dims = spatial_dims(probs)
    squared_error = (onehot - probs).square()
    inside, outside = onehot, 1.0 - onehot
    # the smooth keeps the ratio defined when a class fills the whole sample (no outside voxel) or is
    # absent (no inside voxel): the numerator is then 0 too, so that part contributes 0
    sensitivity = (squared_error * inside).sum(dims) / (inside.sum(dims) + smooth)
    specificity = (squared_error * outside).sum(dims) / (outside.sum(dims) + smooth)
    terms = r * sensitivity + (1.0 - r) * specificity
    if not include_background:
        terms = terms[:, 1:]
    return reduce_classwise(terms, None, reduction)


class SensitivitySpecificityLoss(nn.Module):
    """Sensitivity-specificity loss, averaged over classes.

    Brosch, Yoo, Tang, Li, Traboulsee, Tam, "Deep Convolutional Encoder Networks for Multiple Sclerosis
    Lesion Segmentation", MICCAI 2015, eq. for E; applied to each class ``i`` against the rest:

    ``L_i = r * sum_x (t_i - p_i)^2 t_i / sum_x t_i  +  (1 - r) * sum_x (t_i - p_i)^2 (1 - t_i) / sum_x (1 - t_i)``

    with ``t_i`` the one-hot target and ``p_i`` the softmax probability of class ``i``, per sample.

    The first part is the mean squared error over the voxels of class ``i`` (sensitivity), the second
    over all other voxels (specificity); the paper's "sensitivity ratio" ``r = 0.05`` weighs the first.
    Each denominator gets ``+ smooth`` so absent or all-covering classes stay finite.

    Inputs:
        logits: ``[B, C, *spatial]`` raw scores (any number of spatial dims); softmax applied inside.
        target: integer labels ``[B, *spatial]`` or ``[B, 1, *spatial]``, or one-hot ``[B, C, *spatial]``.

    Args:
        r: weight of the sensitivity part in [0, 1] (default 0.05); the specificity part gets ``1 - r``.
        include_background: keep class 0 in the class mean.
        smooth: added to both denominators (> 0).
        reduction: 'mean' (over samples and classes), 'sum', or 'none': ``[B, C]`` (``[B, C-1]`` without
            background) per-sample, per-class terms ``L_i``.
    """

    def __init__(self, r=0.05, include_background=True, smooth=1e-5, reduction="mean"):
        super().__init__()
        self.r = float(r)
        if not 0.0 <= self.r <= 1.0:
            raise ValueError(f"r must lie in [0, 1], got {r}")
        self.include_background = bool(include_background)
        self.smooth, self.reduction = check_positive("smooth", smooth), check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sensitivity_specificity_loss(logits, target, r=self.r, include_background=self.include_background,
                                            smooth=self.smooth, reduction=self.reduction)
