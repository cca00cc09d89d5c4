"""Label weights for the weighted cross-entropy terms (WCE, ExpLog's cross term).

Two schemes:

* dataset-level, Wong et al. MICCAI 2018: ``w_l = ((sum_k f_k) / f_l) ** 0.5`` from label frequencies
  ``f`` counted once over the training label maps (:func:`label_frequencies`,
  :func:`label_weights_from_frequencies`);
* sample-level, Sudre et al. DLMIA 2017: two-class ``w = (N - sum_n r_n) / sum_n r_n``, generalised here
  to each class of each sample (:func:`ratio_label_weights`).
"""
from __future__ import annotations

from typing import Iterable, Sequence, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]


def label_frequencies(label_maps: Union[ArrayLike, Iterable[ArrayLike]], num_classes: int) -> torch.Tensor:
    """Fraction of voxels of each label over a set of integer label maps.

    Args:
        label_maps: one label map (numpy array or tensor, any shape) or an iterable of them, e.g. a
            generator reading one training case at a time so the dataset never sits in memory at once.
        num_classes: C; every value must lie in ``[0, C-1]``.

    Returns:
        float64 tensor ``[C]`` summing to 1 (labels never seen get 0).
    """
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    num_classes = int(num_classes)
    if isinstance(label_maps, (np.ndarray, torch.Tensor)):
        label_maps = [label_maps]
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for index, label_map in enumerate(label_maps):
        labels = torch.as_tensor(np.asarray(label_map) if not isinstance(label_map, torch.Tensor) else label_map)
        if labels.is_floating_point() and not torch.equal(labels, torch.round(labels)):
            raise ValueError(f"label map {index} holds non-integer values")
        labels = labels.detach().flatten().cpu().long()
        if labels.numel() == 0:
            continue
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            raise ValueError(f"label map {index} holds values in [{low}, {high}], outside [0, {num_classes - 1}]")
        counts += torch.bincount(labels, minlength=num_classes).to(torch.float64)
    total = counts.sum()
    if total <= 0:
        raise ValueError("no voxels in the given label maps")
    return counts / total


def label_weights_from_frequencies(freqs: Union[Sequence[float], ArrayLike], power: float = 0.5) -> torch.Tensor:
    """Wong et al. 2018 label weights ``w_l = ((sum_k f_k) / f_l) ** power`` (power 0.5 in the paper).

    ``freqs`` may be fractions or raw voxel counts: only their ratios matter. A label with frequency 0
    would get an infinite weight; it gets the largest finite weight instead. Such a label never occurs in
    the data the frequencies came from, so its weight is unused there, and the largest weight keeps it
    treated as the rarest structure if it does turn up later.

    Returns:
        float64 tensor ``[C]`` (the most frequent label has the smallest weight, >= 1).
    """
    f = torch.as_tensor(np.asarray(freqs, dtype=np.float64) if not isinstance(freqs, torch.Tensor) else freqs)
    f = f.detach().to(torch.float64).flatten().cpu()
    if f.numel() == 0 or not bool(torch.isfinite(f).all()) or bool((f < 0).any()):
        raise ValueError("frequencies must be a non-empty sequence of finite numbers >= 0")
    if not float(power) >= 0.0:
        raise ValueError(f"power must be >= 0, got {power}")
    total = f.sum()
    if total <= 0:
        raise ValueError("frequencies are all zero")
    seen = f > 0
    weights = torch.zeros_like(f)
    weights[seen] = (total / f[seen]) ** float(power)
    weights[~seen] = weights[seen].max()
    return weights


def ratio_label_weights(onehot: torch.Tensor) -> torch.Tensor:
    """Sudre et al. 2017 weights, one per sample and class: ``w_c = (N - N_c) / N_c`` -> ``[B, C]``.

    ``N`` is the voxel count of the sample and ``N_c = sum_x r_c(x)`` the voxels of class ``c`` in its
    target. For two classes Sudre weights the foreground ``N_bg / N_fg`` and the background 1; applying
    the same rule to every class instead gives the background ``N_fg / N_bg`` (the ratio between the two
    weights is squared). A class absent from the sample gets weight 0: no voxel carries it, so the
    weight multiplies nothing. A sample made of one class only gets all-zero weights, so it adds 0 to
    the loss (with a zero gradient): with nothing to balance, Sudre's formula gives no signal.
    """
    dims = tuple(range(2, onehot.ndim))
    class_voxels = onehot.sum(dims)
    total = torch.tensor(float(np.prod(onehot.shape[2:])), dtype=onehot.dtype, device=onehot.device)
    present = class_voxels > 0
    weights = (total - class_voxels).clamp(min=0.0) / class_voxels.clamp(min=1e-6)
    return torch.where(present, weights, torch.zeros_like(weights)).detach()
