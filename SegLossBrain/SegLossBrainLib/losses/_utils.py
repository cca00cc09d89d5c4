"""Shared plumbing of the losses: input checks, one-hot targets, overlap sums, reductions, safe powers.

Every loss of this package takes raw logits and applies the softmax itself, so this module is the one
place where shapes are checked and targets are brought to one-hot form; the loss files only hold maths.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

REDUCTIONS = ("mean", "sum", "none")

# Floor for the base x of x**gamma when gamma < 1. The derivative gamma * x**(gamma - 1) is infinite at
# x == 0, and autograd multiplies it by dx/dlogits (which is 0 there), giving 0 * inf = NaN. x is exactly 0
# whenever -ln(Dice) or -ln(p) vanishes: a perfect Dice, or a float32 softmax that rounds to exactly 1.0.
# Clamping from below makes such an x contribute a zero gradient (clamp passes no gradient below its
# floor). That is also the true limit: near x = 0 the chain-rule product behaves like gamma * x**gamma,
# which tends to 0, so the floor removes the 0 * inf without biasing training.
# Why 1e-20 and not a larger floor such as 1e-6: the floor is also the smallest value the loss term can
# take, floor**gamma, which is 0.016 for 1e-6 and gamma 0.3 (a perfect prediction would not score 0), and
# every x below the floor loses its (small but real) gradient. 1e-20 gives 1e-6 for gamma 0.3 and keeps the
# largest local derivative, gamma * 1e-20**(gamma - 1) <= 1e20, far inside float32's range.
POW_FLOOR = 1e-20

WeightsLike = Optional[Union[Sequence[float], torch.Tensor]]


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def check_positive(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 < value < float("inf"):  # also rejects NaN
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def check_non_negative(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value < float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def check_weights(name: str, weights: WeightsLike) -> Optional[torch.Tensor]:
    """Validate a per-class weight vector given to a constructor; the length is checked at call time."""
    if weights is None:
        return None
    w = torch.as_tensor(weights, dtype=torch.float64).detach().flatten().clone()
    if w.numel() == 0 or not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError(f"{name} must be a non-empty sequence of finite numbers >= 0, got {weights!r}")
    return w


def weights_for(weights: WeightsLike, num_classes: int, like: torch.Tensor) -> Optional[torch.Tensor]:
    """The weight vector as a tensor of ``like``'s dtype and device, checked against the class count."""
    w = check_weights("label_weights", weights)
    if w is None:
        return None
    if w.numel() != num_classes:
        raise ValueError(f"label_weights has {w.numel()} entries but the logits have {num_classes} classes")
    return w.to(device=like.device, dtype=like.dtype)


def prepare(logits: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Check shapes; return (logits as float32/float64, one-hot target [B, C, *spatial] of that dtype).

    ``target`` may be integer labels ``[B, *spatial]`` or ``[B, 1, *spatial]`` (float label maps are
    accepted when integral), or one-hot / soft labels ``[B, C, *spatial]`` used as they are.
    """
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError("logits must be a floating-point torch.Tensor [B, C, *spatial]")
    if logits.ndim < 3:
        raise ValueError(f"logits must be [B, C, *spatial] with at least one spatial dim, got {tuple(logits.shape)}")
    batch, num_classes, spatial = logits.shape[0], logits.shape[1], tuple(logits.shape[2:])
    if num_classes < 2:
        raise ValueError("softmax losses need at least 2 channels (background + one structure)")
    # half precision loses too many digits in sums over a 3D patch (and in log-softmax), so compute in float32
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    if not isinstance(target, torch.Tensor):
        target = torch.as_tensor(target)
    target = target.to(logits.device)

    if target.ndim == logits.ndim and target.shape[1] == num_classes:
        if target.shape[0] != batch or tuple(target.shape[2:]) != spatial:
            raise ValueError(f"one-hot target {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
        return logits, target.to(logits.dtype)
    if target.ndim == logits.ndim - 1:
        labels = target
    elif target.ndim == logits.ndim and target.shape[1] == 1:
        labels = target[:, 0]
    else:
        raise ValueError(
            f"target {tuple(target.shape)} fits neither labels [B, *spatial] / [B, 1, *spatial] nor one-hot "
            f"[B, C, *spatial] for logits {tuple(logits.shape)}"
        )
    if tuple(labels.shape) != (batch,) + spatial:
        raise ValueError(f"label map {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
    if labels.is_floating_point() and not torch.equal(labels, torch.round(labels)):
        raise ValueError("a label-map target must hold integer values")
    labels = labels.long()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], got [{int(labels.min())}, {int(labels.max())}]")
    onehot = F.one_hot(labels, num_classes).movedim(-1, 1).to(logits.dtype)
    return logits, onehot


def spatial_dims(x: torch.Tensor) -> Tuple[int, ...]:
    return tuple(range(2, x.ndim))


def overlap_sums(
    probs: torch.Tensor, onehot: torch.Tensor, include_background: bool
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per sample and class: (sum p*r, sum p, sum r), each [B, C] ([B, C-1] without the background)."""
    dims = spatial_dims(probs)
    inter = (probs * onehot).sum(dims)
    psum = probs.sum(dims)
    rsum = onehot.sum(dims)
    if not include_background:
        # the softmax already ran over all classes; only the background's own term is dropped
        inter, psum, rsum = inter[:, 1:], psum[:, 1:], rsum[:, 1:]
    return inter, psum, rsum


def present_mask(rsum: torch.Tensor, ignore_absent: bool) -> Optional[torch.Tensor]:
    """For ``ignore_absent``: True where the class has at least one voxel in the sample's target."""
    return rsum > 0 if ignore_absent else None


def safe_pow(x: torch.Tensor, gamma: float) -> torch.Tensor:
    """x**gamma for x >= 0 with a finite gradient everywhere (see POW_FLOOR)."""
    if gamma == 1.0:
        # clamp at 0 only to absorb rounding (e.g. -ln(Dice) = -1e-8 when Dice rounds above 1)
        return x.clamp(min=0.0)
    return x.clamp(min=POW_FLOOR if gamma < 1.0 else 0.0).pow(gamma)


def classwise_per_sample(terms: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean over classes of [B, C] terms -> [B]; with a mask, over kept classes (0 when none is kept)."""
    if mask is None:
        return terms.mean(1)
    kept = torch.where(mask, terms, torch.zeros_like(terms))
    return kept.sum(1) / mask.sum(1).clamp(min=1).to(terms.dtype)


def reduce_classwise(terms: torch.Tensor, mask: Optional[torch.Tensor], reduction: str) -> torch.Tensor:
    """Reduce [B, C] per-sample, per-class terms.

    'mean': mean over samples of the per-sample class mean (equal to the mean over all [B, C] entries
    when nothing is masked); 'sum': sum of the kept entries; 'none': [B, C] with masked entries set to 0.
    """
    if reduction == "mean":
        return classwise_per_sample(terms, mask).mean()
    kept = terms if mask is None else torch.where(mask, terms, torch.zeros_like(terms))
    return kept.sum() if reduction == "sum" else kept


def reduce_plain(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """'mean' / 'sum' over every entry, or the tensor itself for 'none'."""
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def per_sample_voxel_mean(per_voxel: torch.Tensor) -> torch.Tensor:
    """[B, *spatial] -> [B]; every sample has the same voxel count, so the mean of these is the global mean."""
    return per_voxel.flatten(1).mean(1)


def broadcast_classes(weights: torch.Tensor, ndim: int) -> torch.Tensor:
    """Shape a [C] (or per-sample [B, C]) weight so it multiplies a [B, C, *spatial] tensor."""
    if weights.ndim == 1:
        return weights.view(1, -1, *([1] * (ndim - 2)))
    return weights.view(weights.shape[0], weights.shape[1], *([1] * (ndim - 2)))
