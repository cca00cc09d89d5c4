"""Cross-entropy and weighted cross-entropy on softmax probabilities.

``-ln p`` always comes from ``log_softmax``: computing ``softmax`` first and taking its log gives
``log(0) = -inf`` (and NaN gradients) as soon as a float32 probability underflows.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._utils import (
    broadcast_classes,
    check_reduction,
    check_weights,
    prepare,
    reduce_plain,
    weights_for,
)
from .weights import label_weights_from_frequencies, ratio_label_weights

WEIGHTINGS = ("fixed", "sudre")

_SHAPES = """
    Inputs:
        logits: ``[B, C, *spatial]`` raw scores (any number of spatial dims); softmax applied inside.
        target: integer labels ``[B, *spatial]`` or ``[B, 1, *spatial]``, or one-hot ``[B, C, *spatial]``
            (soft labels give ``-sum_c r_c w_c ln p_c``).
"""


def _check_weighting(weighting: str) -> str:
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    return weighting


def weighted_ce_per_voxel(logits, target, *, label_weights=None, weighting="fixed"):
    """``w_l(x) * -ln p_l(x)`` per voxel, ``[B, *spatial]``; shared with the compound losses."""
    _check_weighting(weighting)
    logits, onehot = prepare(logits, target)
    nll = -F.log_softmax(logits, dim=1) * onehot
    if weighting == "sudre":
        if label_weights is not None:
            raise ValueError("weighting='sudre' computes its own weights; do not pass label_weights too")
        nll = nll * broadcast_classes(ratio_label_weights(onehot), nll.ndim)
    else:
        weights = weights_for(label_weights, logits.shape[1], logits)
        if weights is not None:
            nll = nll * broadcast_classes(weights, nll.ndim)
    return nll.sum(1)


def weighted_cross_entropy_loss(logits, target, *, label_weights=None, weighting="fixed", reduction="mean"):
    """Functional form of :class:`WeightedCrossEntropyLoss`."""
    check_reduction(reduction)
    per_voxel = weighted_ce_per_voxel(logits, target, label_weights=label_weights, weighting=weighting)
    return reduce_plain(per_voxel, reduction)


def cross_entropy_loss(logits, target, *, reduction="mean"):
    """Functional form of :class:`CrossEntropyLoss`."""
    return weighted_cross_entropy_loss(logits, target, reduction=reduction)


def resolve_label_weights(label_weights=None, label_frequencies=None, power=0.5):
    """The constructor-level weight vector: given weights, or weights from frequencies, or None (all 1)."""
    if label_weights is not None and label_frequencies is not None:
        raise ValueError("give either label_weights or label_frequencies, not both")
    if label_frequencies is not None:
        return label_weights_from_frequencies(label_frequencies, power)
    return check_weights("label_weights", label_weights)


class CrossEntropyLoss(nn.Module):
    __doc__ = """Categorical cross-entropy: ``L = E_x[-ln p_l(x)]``, ``l`` the true label of voxel ``x``.

    Equals ``torch.nn.functional.cross_entropy`` for label targets.
    """ + _SHAPES + """
    Args:
        reduction: 'mean' (over all voxels of all samples), 'sum', or 'none': the per-voxel loss
            ``[B, *spatial]``.
    """

    def __init__(self, reduction="mean"):
        super().__init__()
        self.reduction = check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy_loss(logits, target, reduction=self.reduction)


class WeightedCrossEntropyLoss(nn.Module):
    __doc__ = """Weighted cross-entropy: ``L = E_x[w_l(x) * -ln p_l(x)]``.

    Ronneberger et al., "U-Net", MICCAI 2015 (weighted CE); label weights of Wong et al., MICCAI 2018:
    ``w_l = ((sum_k f_k) / f_l) ** 0.5`` from label frequencies ``f``; or the weights of Sudre et al.,
    DLMIA 2017, ``w = (N - sum r) / sum r``, taken per sample and per class (``weighting='sudre'``, see
    :func:`~SegLossBrainLib.losses.weights.ratio_label_weights`).

    The weighted terms are averaged over voxels (as in Wong et al.'s cross term), not divided by the sum
    of the weights as ``torch.nn.CrossEntropyLoss(weight=...)`` does: with all weights 1 both agree.
    """ + _SHAPES + """
    Args:
        label_weights: ``[C]`` weights, one per class (set the background's to 0 to ignore it).
        label_frequencies: ``[C]`` label frequencies (or counts) to derive the weights from instead,
            with :func:`~SegLossBrainLib.losses.weights.label_weights_from_frequencies`.
        power: exponent of that derivation (0.5 in Wong et al.).
        weighting: 'fixed' (the weights above; all 1 when none are given) or 'sudre' (per-sample weights
            computed from the target; excludes ``label_weights`` / ``label_frequencies``).
        reduction: 'mean' (over all voxels of all samples), 'sum', or 'none': the per-voxel loss
            ``[B, *spatial]``.
    """

    def __init__(self, label_weights=None, label_frequencies=None, power=0.5, weighting="fixed", reduction="mean"):
        super().__init__()
        self.weighting = _check_weighting(weighting)
        weights = resolve_label_weights(label_weights, label_frequencies, power)
        if weighting == "sudre" and weights is not None:
            raise ValueError("weighting='sudre' computes its own weights; do not pass label weights or frequencies")
        # a buffer follows .to(device); it is not persistent because it is configuration, not learned state
        self.register_buffer("label_weights", weights, persistent=False)
        self.reduction = check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return weighted_cross_entropy_loss(logits, target, label_weights=self.label_weights,
                                           weighting=self.weighting, reduction=self.reduction)
