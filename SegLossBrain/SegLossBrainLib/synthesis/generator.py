"""Synthetic training pairs (image, 20-label target) from FreeSurfer-style whole-head label maps.

Each draw: a random affine + smooth diffeomorphic deformation maps the network grid (LPS, identity direction,
``NETWORK_SPACING_MM``) into one label map, which is read by nearest neighbour directly on that grid; every
generation label gets a random Gaussian intensity (T1-like order for a share of draws); then partial volume,
bias field, resolution loss with noise, gamma, and the same intensity normalisation as inference.

Randomness: small parameters are drawn on the host from the caller's generator; voxel-wise fields come from
a generator on the working device, seeded from the caller's when the devices differ. Hence one seed gives one
sample on a given device (CPU and GPU samples differ, each reproducible).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from ..preprocessing.grid_constants import NETWORK_SPACING_MM, SIZE_MULTIPLE
from ..preprocessing.intensity import normalise_intensity
from .geometry import (LabelMapSource, forward_linear, known_generation_labels, output_grid, patch_centre,
                       sample_nearest, smooth_displacement)
from .intensity import (uniform_draws, apply_gamma, bias_field, degrade_resolution, draw_label_intensities,
                        gaussian_blur)

__all__ = ["SynthesisSettings", "LabelMapSource", "SyntheticBrainGenerator", "known_generation_labels"]


@dataclass(frozen=True)
class SynthesisSettings:
    patch_size: tuple = (64, 64, 64)  # (D, H, W) voxels, each a multiple of SIZE_MULTIPLE
    spacing_mm: float = NETWORK_SPACING_MM
    t1_fraction: float = 0.5  # share of draws with T1-like contrast (WM > GM > CSF)
    # geometry
    scale_range: tuple = (0.8, 1.2)  # per axis
    rotation_deg: float = 15.0  # +- per axis
    shear: float = 0.012  # +- per off-diagonal term
    translation_mm: float = 20.0  # +- per axis, on top of the brain-voxel patch centre
    deformation_std_mm: float = 3.0  # velocity std of a draw is uniform in [0, this]
    deformation_control_points: tuple = (5, 8)  # coarse velocity lattice along the longest axis, inclusive
    # intensities and artefacts
    intensity_std_max: float = 0.1  # within-label std is uniform in [0, this]
    dark_background_fraction: float = 0.5  # random-contrast draws with dark air (T1-like ones always have it)
    partial_volume_sigma_max: float = 0.6  # voxels
    bias_std: float = 0.3  # std of log bias field is uniform in [0, this]
    bias_grid: int = 4
    gamma_std: float = 0.4  # gamma = exp(N(0, this))
    noise_std_max: float = 0.05  # noise std uniform in [0, this], image scale where means lie in [0, 1]
    max_resolution_mm: float = 4.0
    low_resolution_fraction: float = 0.7  # draws with a coarser acquisition (one random axis or all axes)
    unknown_labels: str = "error"  # or "background": how label maps given as paths treat unknown values

    def __post_init__(self):
        size = self.patch_size
        size = (size,) * 3 if isinstance(size, int) else tuple(size)
        if len(size) != 3 or not all(isinstance(n, (int, np.integer)) and n > 0 and n % SIZE_MULTIPLE == 0
                                     for n in size):
            raise ValueError(f"patch_size must be 3 positive integers, each a multiple of {SIZE_MULTIPLE} "
                             f"(the network pools 4 times), got {self.patch_size!r}")
        object.__setattr__(self, "patch_size", tuple(int(n) for n in size))
        scale = tuple(self.scale_range)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {self.scale_range!r}")
        object.__setattr__(self, "scale_range", scale)
        cps = tuple(self.deformation_control_points)
        if len(cps) != 2 or not 2 <= cps[0] <= cps[1]:
            raise ValueError("deformation_control_points must be (low, high) with 2 <= low <= high, "
                             f"got {self.deformation_control_points!r}")
        object.__setattr__(self, "deformation_control_points", cps)
        if not self.spacing_mm > 0:
            raise ValueError(f"spacing_mm must be > 0, got {self.spacing_mm}")
        for name in ("t1_fraction", "dark_background_fraction", "low_resolution_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} is a probability and must lie in [0, 1], got {getattr(self, name)}")
        for name in ("translation_mm", "deformation_std_mm", "intensity_std_max", "partial_volume_sigma_max",
                     "bias_std", "gamma_std", "noise_std_max"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.rotation_deg <= 180:
            raise ValueError(f"rotation_deg must lie in [0, 180], got {self.rotation_deg}")
        if not 0 <= self.shear < 0.5:
            raise ValueError(f"shear must lie in [0, 0.5) (a small fraction), got {self.shear}")
        if self.bias_grid < 2:
            raise ValueError(f"bias_grid must be >= 2 points per axis, got {self.bias_grid}")
        if not self.max_resolution_mm >= self.spacing_mm:
            raise ValueError(f"max_resolution_mm ({self.max_resolution_mm}) must be >= spacing_mm "
                             f"({self.spacing_mm}); set low_resolution_fraction=0 to disable resolution loss")
        if self.unknown_labels not in ("error", "background"):
            raise ValueError(f"unknown_labels must be 'error' or 'background', got {self.unknown_labels!r}")

    def without_augmentation(self) -> "SynthesisSettings":
        """Same settings with the spatial transform reduced to the identity (for checks and figures)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(scale_range=(1.0, 1.0), rotation_deg=0.0, shear=0.0, translation_mm=0.0,
                      deformation_std_mm=0.0)
        return SynthesisSettings(**values)


class SyntheticBrainGenerator:
    """Draws (image [1, D, H, W] float32 in [0, 1], target [D, H, W] int64 in 0..19) pairs."""

    def __init__(self, sources, settings: SynthesisSettings | None = None, device="cpu"):
        self.settings = settings or SynthesisSettings()
        self.device = torch.device(device)
        if not sources:
            raise ValueError("at least one label map (path or LabelMapSource) is needed")
        self.sources = [
            s.to(self.device) if isinstance(s, LabelMapSource)
            else LabelMapSource.load(Path(s), device=self.device, unknown_labels=self.settings.unknown_labels)
            for s in sources
        ]
        self._grid = output_grid(self.settings.patch_size, self.settings.spacing_mm, self.device)

    def _device_generator(self, rng: torch.Generator) -> torch.Generator:
        if rng.device.type == self.device.type:
            return rng
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=rng, device=rng.device))
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed)
        return gen

    def _sample_codes(self, source: LabelMapSource, rng, gen) -> torch.Tensor:
        s = self.settings
        scales = uniform_draws(rng, 3, *s.scale_range)
        angles = uniform_draws(rng, 3, -s.rotation_deg, s.rotation_deg)
        shears = uniform_draws(rng, 6, -s.shear, s.shear)
        linear = np.linalg.inv(forward_linear(scales, angles, shears))  # output mm -> source mm
        extent = np.array(s.patch_size[::-1], dtype=np.float64) * s.spacing_mm / scales  # (x, y, z) in source mm
        pick = int(torch.randint(len(source.brain_points), (1,), generator=rng, device=rng.device))
        centre = patch_centre(source, extent, pick, uniform_draws(rng, 3, -s.translation_mm, s.translation_mm))
        points = self._grid
        std = uniform_draws(rng, 1, 0.0, s.deformation_std_mm)[0]
        low, high = s.deformation_control_points
        control = int(torch.randint(low, high + 1, (1,), generator=rng, device=rng.device))
        if std > 0:
            points = points + smooth_displacement(s.patch_size, s.spacing_mm, control, std, gen, self.device)
        return sample_nearest(source, points, linear, centre).long()

    def _render(self, source: LabelMapSource, codes: torch.Tensor, rng, gen) -> torch.Tensor:
        s = self.settings
        t1_like = uniform_draws(rng, 1)[0] < s.t1_fraction
        means, stds = draw_label_intensities(source.values, t1_like, s.intensity_std_max,
                                             s.dark_background_fraction, rng)
        means_t = torch.as_tensor(means, dtype=torch.float32, device=self.device)
        stds_t = torch.as_tensor(stds, dtype=torch.float32, device=self.device)
        noise = torch.randn(codes.shape, generator=gen, device=self.device)
        image = (means_t[codes] + stds_t[codes] * noise)[None, None]

        image = gaussian_blur(image, [uniform_draws(rng, 1, 0.0, s.partial_volume_sigma_max)[0]] * 3)
        bias_std = uniform_draws(rng, 1, 0.0, s.bias_std)[0]
        if bias_std > 0:
            image = image * bias_field(s.patch_size, bias_std, s.bias_grid, gen, self.device)

        # acquisition: thick slices along one random axis, or a coarser voxel in all axes, or neither
        resolution = [s.spacing_mm] * 3
        mode = uniform_draws(rng, 1)[0]
        thickness = uniform_draws(rng, 1, s.spacing_mm, s.max_resolution_mm)[0]
        axis = int(torch.randint(3, (1,), generator=rng, device=rng.device))
        if mode < s.low_resolution_fraction / 2:
            resolution[axis] = thickness
        elif mode < s.low_resolution_fraction:
            resolution = [thickness] * 3
        noise_std = uniform_draws(rng, 1, 0.0, s.noise_std_max)[0]
        image = degrade_resolution(image, resolution, s.spacing_mm, noise_std, gen)

        log_gamma = torch.randn(1, generator=rng, device=rng.device, dtype=torch.float64).item()
        gamma = float(np.exp(s.gamma_std * log_gamma))
        image = apply_gamma(image, gamma)
        return normalise_intensity(image[0])

    def sample(self, rng: torch.Generator, source_index: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One pair from label map ``source_index`` (random when None): image [1, D, H, W] float32 in [0, 1],
        target [D, H, W] int64 structure indices."""
        if source_index is None:
            source_index = int(torch.randint(len(self.sources), (1,), generator=rng, device=rng.device))
        source = self.sources[source_index]
        gen = self._device_generator(rng)
        codes = self._sample_codes(source, rng, gen)
        target = source.target_lut[codes]
        return self._render(source, codes, rng, gen), target

    def batch(self, batch_size: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` pairs, each from a random label map: images [B, 1, D, H, W], targets [B, D, H, W]."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        pairs = [self.sample(rng) for _ in range(batch_size)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
