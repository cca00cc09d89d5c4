"""Softmax focal loss (Lin et al., ICCV 2017), multi-class form."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._utils import (
    broadcast_classes,
    check_non_negative,
    check_reduction,
    check_weights,
    prepare,
    reduce_plain,
    safe_pow,
    weights_for,
)


def _alpha_vector(alpha, num_classes, like):
    """None, a scalar (``1 - alpha`` for the background, ``alpha`` for every other class) or ``[C]``."""
    if alpha is None:
        return None
    if isinstance(alpha, (int, float)):
        alpha = float(alpha)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"a scalar alpha must lie in [0, 1], got {alpha}")
        vector = torch.full((num_classes,), alpha, dtype=like.dtype, device=like.device)
        vector[0] = 1.0 - alpha
        return vector
    return weights_for(alpha, num_classes, like)


def focal_per_voxel(logits, target, *, gamma=2.0, alpha=None):
    """``-alpha_l (1 - p_l)^gamma ln p_l`` per voxel, ``[B, *spatial]``; shared with the compound loss."""
    gamma = check_non_negative("gamma", gamma)
    logits, onehot = prepare(logits, target)
    log_p = F.log_softmax(logits, dim=1)
    # 1 - exp(log p) is >= 0 by construction; safe_pow floors it for gamma < 1, where (1 - p)^gamma has an
    # infinite derivative at p = 1 (a saturated float32 softmax gives exactly p = 1)
    modulating = safe_pow(1.0 - log_p.exp(), gamma)
    per_class = -modulating * log_p * onehot
    weights = _alpha_vector(alpha, logits.shape[1], logits)
    if weights is not None:
        per_class = per_class * broadcast_classes(weights, per_class.ndim)
    return per_class.sum(1)


def focal_loss(logits, target, *, gamma=2.0, alpha=None, reduction="mean"):
    """Functional form of :class:`FocalLoss`."""
    check_reduction(reduction)
    return reduce_plain(focal_per_voxel(logits, target, gamma=gamma, alpha=alpha), reduction)


class FocalLoss(nn.Module):
    """Focal loss with a softmax: ``L = E_x[-alpha_l (1 - p_l(x))^gamma ln p_l(x)]``.

    Lin, Goyal, Girshick, He, Dollar, "Focal Loss for Dense Object Detection", ICCV 2017, with the
    sigmoid replaced by a softmax over the C classes; ``l`` is the true label of voxel ``x``.
    ``gamma = 0`` and no ``alpha`` give the plain cross-entropy. ``ln p`` comes from ``log_softmax``.

    The loss is averaged over voxels. MONAI's ``FocalLoss(use_softmax=True)`` keeps a ``[B, C, *spatial]``
    map and averages over classes too, so its 'mean' is this loss divided by C.

    Inputs:
        logits: ``[B, C, *spatial]`` raw scores (any number of spatial dims); softmax applied inside.
        target: integer labels ``[B, *spatial]`` or ``[B, 1, *spatial]``, or one-hot ``[B, C, *spatial]``.

    Args:
        gamma: focusing exponent (>= 0, default 2).
        alpha: None (all 1), a scalar in [0, 1] (``1 - alpha`` for the background, ``alpha`` for every other
            class: Lin's binary balance, MONAI's convention), or ``[C]`` per-class weights (give the
            background 0 to ignore it).
        reduction: 'mean' (over all voxels of all samples), 'sum', or 'none': the per-voxel loss
            ``[B, *spatial]``.
    """

    def __init__(self, gamma=2.0, alpha=None, reduction="mean"):
        super().__init__()
        self.gamma = check_non_negative("gamma", gamma)
        if alpha is not None and not isinstance(alpha, (int, float)):
            alpha = check_weights("alpha", alpha)
        elif alpha is not None and not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"a scalar alpha must lie in [0, 1], got {alpha}")
        self.alpha = alpha
        self.reduction = check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, target, gamma=self.gamma, alpha=self.alpha, reduction=self.reduction)
