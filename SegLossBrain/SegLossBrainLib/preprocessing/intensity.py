"""Robust intensity normalisation, shared by inference (real scans) and training (synthetic images).

MR intensities have no absolute scale, so each image is mapped to [0, 1] by two percentiles: the low one over
all voxels (air or skull-stripped background), the high one over the voxels above it (the head), which
keeps a bright fat or vessel voxel from compressing the brain's range.
"""
from __future__ import annotations

import torch

LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
_MAX_QUANTILE_SAMPLES = 1 << 22  # a strided sample of 4 M voxels pins a percentile well below 0.1 %


def _sample(values: torch.Tensor) -> torch.Tensor:
    values = values.flatten()
    step = max(1, values.numel() // _MAX_QUANTILE_SAMPLES)
    return values[::step].float()


def _percentile(values: torch.Tensor, percent: float) -> torch.Tensor:
    """Nearest-rank percentile; torch.kthvalue is several times faster than torch.quantile's sort."""
    k = min(values.numel(), max(1, int(round(percent / 100 * (values.numel() - 1))) + 1))
    return torch.kthvalue(values.cpu() if values.device.type == "mps" else values, k).values.to(values.device)


def normalise_intensity(image: torch.Tensor) -> torch.Tensor:
    """Map ``image`` (any shape) to [0, 1] by its 0.5th (all voxels) and 99.5th (voxels above the low value)
    percentiles, clipping outside. A constant image maps to zeros."""
    sample = _sample(image)
    low = _percentile(sample, LOW_PERCENTILE)
    above = sample[sample > low]
    high = _percentile(above, HIGH_PERCENTILE) if above.numel() else low
    if float(high - low) <= 0:
        return torch.zeros_like(image, dtype=torch.float32)
    return ((image.float() - low) / (high - low)).clamp_(0, 1)
