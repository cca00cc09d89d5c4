"""Robust intensity normalisation, shared by inference (real scans) and training (synthetic images).

MR intensities have no absolute scale, so each image is mapped to [0, 1] by two percentiles: the low one over
all voxels (air or skull-stripped background), the high one over the voxels above it (the head), which
keeps a bright fat or vessel voxel from compressing the brain's range.
"""
from __future__ import annotations

import torch

LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
_MAX_QUANTILE_SAMPLES = 1 << 22  # torch.quantile refuses inputs above 16 M elements; a strided sample suffices


def _sample(values: torch.Tensor) -> torch.Tensor:
    values = values.flatten()
    step = max(1, values.numel() // _MAX_QUANTILE_SAMPLES)
    return values[::step].float()


def normalise_intensity(image: torch.Tensor) -> torch.Tensor:
    """Map ``image`` (any shape) to [0, 1] by its 0.5th (all voxels) and 99.5th (voxels above the low value)
    percentiles, clipping outside. A constant image maps to zeros."""
    sample = _sample(image)
    low = torch.quantile(sample, LOW_PERCENTILE / 100)
    above = sample[sample > low]
    high = torch.quantile(above, HIGH_PERCENTILE / 100) if above.numel() else low
    if float(high - low) <= 0:
        return torch.zeros_like(image, dtype=torch.float32)
    return ((image.float() - low) / (high - low)).clamp_(0, 1)
