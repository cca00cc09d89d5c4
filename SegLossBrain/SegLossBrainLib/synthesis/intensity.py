"""Intensities of synthetic training images: a Gaussian per generation label, then scanner artefacts.

Two contrast regimes. "Random" draws every label's mean independently, so the network cannot lean on any
particular contrast. "T1-like" keeps the tissue order of a T1-weighted scan (white matter > grey matter >
CSF) with per-structure jitter, because most clinical brain MRI is T1 and the random regime alone seldom
produces it. Left and right labels are separate values, so they always get separate draws.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# T1 position of a label on a scale where 0 is CSF, 1 grey matter and 2 white matter: (low, high), drawn
# uniformly per label and draw. Ranges follow the usual look of an MPRAGE: deep grey nuclei between cortex and
# white matter (pallidum brightest, nearly white; caudate and accumbens darkest), ventral DC nearly white,
# brainstem and cerebellar white matter well below cerebral white matter, cerebellar cortex a little darker than
# cerebral cortex, lesions and white matter hypointensities between grey and white. The deep grey, brainstem
# and cerebellar ranges contain the medians measured in bert's real scan (bench/experiments/t1_positions_real.py).
# The inferior lateral and 3rd ventricles are slits a few mm wide: in real scans most of their voxels are
# partial volume with the tissue around them (bert: medians 0.39 and 0.27), more than the generator's blur makes
# of a pure-CSF draw, so their ranges reach up to that look.
_T1_POSITION_GROUPS = (
    ((4, 43, 15, 24, 72), (0.0, 0.15)),  # CSF, lateral and 4th ventricles
    ((5, 44), (0.0, 0.5)),  # inferior lateral ventricle
    ((14,), (0.0, 0.35)),  # 3rd ventricle
    ((31, 63), (0.4, 1.0)),  # choroid plexus
    ((3, 42), (0.95, 1.05)),  # cerebral cortex
    ((8, 47), (0.8, 1.1)),  # cerebellar cortex
    ((17, 53, 18, 54), (0.9, 1.15)),  # hippocampus, amygdala
    ((26, 58), (0.9, 1.25)),  # accumbens
    ((11, 50), (1.0, 1.3)),  # caudate
    ((12, 51), (1.2, 1.6)),  # putamen
    ((10, 49), (1.3, 1.7)),  # thalamus
    ((13, 52), (1.65, 2.0)),  # pallidum
    ((28, 60), (1.4, 1.8)),  # ventral DC
    ((16,), (1.2, 1.7)),  # brainstem
    ((2, 41, 251, 252, 253, 254, 255), (1.95, 2.05)),  # cerebral white matter, corpus callosum
    ((7, 46), (1.3, 1.8)),  # cerebellar white matter
    ((85,), (1.6, 2.0)),  # optic chiasm
    ((25, 57, 77, 80), (0.6, 1.5)),  # lesions, (non-)white matter hypointensities
)
T1_POSITIONS = {value: bounds for values, bounds in _T1_POSITION_GROUPS for value in values}
_DARK_BACKGROUND = (0.0, 0.1)


def uniform_draws(rng: torch.Generator, n: int, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """Host-side uniform draws from ``rng`` (any device), as float64 numpy."""
    draws = torch.rand(n, generator=rng, device=rng.device, dtype=torch.float64).cpu().numpy()
    return low + (high - low) * draws


def draw_label_intensities(values: np.ndarray, t1_like: bool, std_max: float, dark_background_fraction: float,
                           rng: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (image units, means in [0, 1]) for each generation label value."""
    n = len(values)
    means = uniform_draws(rng, n)  # random regime, and non-brain tissues / vessels in both regimes
    stds = uniform_draws(rng, n, 0.0, std_max)
    if t1_like:
        white = uniform_draws(rng, 1, 0.6, 1.0)[0]
        grey = white * uniform_draws(rng, 1, 0.55, 0.8)[0]
        csf = grey * uniform_draws(rng, 1, 0.05, 0.5)[0]
        position = uniform_draws(rng, n)
        for c, value in enumerate(values):
            bounds = T1_POSITIONS.get(int(value))
            if bounds is None:
                continue
            p = bounds[0] + (bounds[1] - bounds[0]) * position[c]
            # piecewise linear through the three anchors; beyond 2 extrapolates slightly above white matter
            means[c] = csf + p * (grey - csf) if p <= 1 else grey + (p - 1) * (white - grey)
        dark_background = True
    else:
        dark_background = uniform_draws(rng, 1)[0] < dark_background_fraction
    if dark_background:
        means[0] = uniform_draws(rng, 1, *_DARK_BACKGROUND)[0]
        stds[0] = min(stds[0], 0.02)
    return means, stds


def gaussian_blur(volume: torch.Tensor, sigmas_vox) -> torch.Tensor:
    """Separable Gaussian blur of [1, 1, D, H, W] with per-axis sigmas (voxels, D/H/W order); edges
    replicated so the border is not darkened."""
    for axis, sigma in enumerate(sigmas_vox):
        if sigma < 0.2:  # below this the kernel is effectively a delta
            continue
        radius = max(1, int(math.ceil(3 * sigma)))
        x = torch.arange(-radius, radius + 1, dtype=volume.dtype, device=volume.device)
        kernel = torch.exp(-0.5 * (x / sigma) ** 2)
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius  # F.pad lists the last axis first
        volume = F.conv3d(F.pad(volume, pad, mode="replicate"), (kernel / kernel.sum()).view(shape))
    return volume


def bias_field(shape, std: float, grid: int, gen: torch.Generator, device) -> torch.Tensor:
    """Smooth multiplicative field exp(N(0, std)) from a ``grid``-point coarse lattice, [1, 1, *shape]."""
    coarse = torch.randn((1, 1, grid, grid, grid), generator=gen, device=device) * std
    return torch.exp(F.interpolate(coarse, size=list(shape), mode="trilinear", align_corners=True))


def degrade_resolution(image: torch.Tensor, resolution_mm, spacing_mm: float, noise_std: float,
                       gen: torch.Generator) -> torch.Tensor:
    """Simulate an acquisition at ``resolution_mm`` (D, H, W) and noise, then bring it back to the grid.

    The slice profile is taken as a Gaussian whose FWHM is the voxel size; the image already has the grid's
    resolution, so only the difference is blurred. The blurred image is decimated to the acquisition grid,
    noise is added there (so it has the acquisition's grain), and it is interpolated back linearly.
    """
    shape = list(image.shape[2:])
    factors = [max(r / spacing_mm, 1.0) for r in resolution_mm]
    sigmas = [math.sqrt(f * f - 1) / (2 * math.sqrt(2 * math.log(2))) for f in factors]
    low_shape = [max(2, round(n / f)) for n, f in zip(shape, factors)]
    image = gaussian_blur(image, sigmas)
    resampled = low_shape != shape
    if resampled:
        image = F.interpolate(image, size=low_shape, mode="trilinear", align_corners=True)
    if noise_std > 0:
        image = image + noise_std * torch.randn(image.shape, generator=gen, device=image.device)
    if resampled:
        image = F.interpolate(image, size=shape, mode="trilinear", align_corners=True)
    return image


def apply_gamma(image: torch.Tensor, gamma: float) -> torch.Tensor:
    """Rescale to [0, 1] by the maximum and raise to ``gamma`` (a non-linear contrast change)."""
    image = image.clamp_min(0)
    peak = image.max()
    if float(peak) <= 0:
        return image
    return (image / peak).pow(gamma)
