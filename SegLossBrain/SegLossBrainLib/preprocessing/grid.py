"""Between a user's volume and the network: the network grid, resampling there, and probabilities back.

The network grid is isotropic at ``NETWORK_SPACING_MM`` (1.5 mm). Its axes are the input's own axes,
permuted and flipped so that they point as close as possible to L, P, S (ITK's LPS identity): the network
always sees the head in the orientation it was trained in, and an oblique acquisition (usually aligned to
the anatomy) keeps its alignment instead of being rotated once more. Its extent is the head's bounding box,
rounded up to a multiple of 16 voxels and capped (``MAX_GRID_VOXELS`` across, ``MAX_GRID_HEIGHT_VOXELS`` along
the superior axis); when the head is longer than the cap (a scan with neck) the grid keeps the superior end,
where the brain is, and its other two axes cover the head within that slab only.

Because the two grids share axes, the map from an input voxel to network coordinates is separable (one
scale and offset per axis); the way back, probabilities to labels on the input grid, is ``back_projection.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from .back_projection import probabilities_to_image  # noqa: F401  (callers use grids.probabilities_to_image)
from .grid_constants import NETWORK_SPACING_MM, SIZE_MULTIPLE
from .intensity import normalise_array
from .output_grid import isotropic_geometry

if TYPE_CHECKING:
    import torch  # annotations only: importing this module must not import torch

MAX_GRID_VOXELS = 160  # 240 mm at 1.5 mm across (left-right, front-back): a whole adult head
# 216 mm along the superior axis, from the top of the head down: in the 20 whole-head training maps the lowest
# brain voxel lies 143-166 mm below the top of the head (194 mm in one map whose top label is 55 mm above the
# brain). Longer fields of view (neck, shoulders) are cropped: 10 % fewer voxels than 240 mm for the network.
MAX_GRID_HEIGHT_VOXELS = 144
MIN_GRID_VOXELS = 64
_FOREGROUND_SPACING_MM = 3.0  # the head mask is found on a coarse copy: fast, and blind to single bright voxels


def closest_axes(direction) -> tuple[np.ndarray, np.ndarray]:
    """(permutation, signs) such that network axis ``a`` is ``signs[a]`` x input axis ``permutation[a]``
    and points as close as possible to LPS axis ``a``."""
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)  # columns: input axes in LPS
    permutation = np.full(3, -1)
    remaining = [0, 1, 2]
    # Assign the most decisive axis first so that a 45-degree tie cannot take an axis twice.
    for lps_axis in np.argsort(-np.abs(matrix).max(axis=1)):
        best = max(remaining, key=lambda column: abs(matrix[lps_axis, column]))
        permutation[lps_axis] = best
        remaining.remove(best)
    signs = np.sign(matrix[np.arange(3), permutation])
    signs[signs == 0] = 1
    return permutation, signs


@dataclass(frozen=True)
class NetworkGrid:
    """The grid the network runs on. ``size`` is (x, y, z) as SimpleITK counts it; ``direction`` is a
    row-major 3x3 matrix whose columns are the grid axes in LPS."""

    origin: tuple[float, float, float]
    size: tuple[int, int, int]
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    spacing: float = NETWORK_SPACING_MM

    def reference_image(self) -> sitk.Image:
        reference = sitk.Image([int(s) for s in self.size], sitk.sitkUInt8)
        reference.SetSpacing([self.spacing] * 3)
        reference.SetOrigin([float(v) for v in self.origin])
        reference.SetDirection([float(v) for v in self.direction])
        return reference

    @property
    def shape(self) -> tuple[int, int, int]:
        """Tensor shape (D, H, W) = (z, y, x)."""
        return tuple(reversed(self.size))


def physical_bounds(image: sitk.Image, mask: np.ndarray | None = None, frame: np.ndarray | None = None):
    """Bounding box (min corner, max corner) of the image's voxels, or of the voxels where ``mask``
    ([k, j, i], the image's array order) is true, in LPS or, with ``frame`` (3x3, columns = axes), in that
    rotated frame's coordinates. Corners of the voxels, not centres."""
    if mask is not None and mask.any():
        indices = np.argwhere(mask)[:, ::-1]  # (i, j, k)
        low, high = indices.min(axis=0) - 0.5, indices.max(axis=0) + 0.5
    else:
        low, high = np.full(3, -0.5), np.array(image.GetSize(), dtype=float) - 0.5
    corners = np.array(
        [
            image.TransformContinuousIndexToPhysicalPoint([float(x), float(y), float(z)])
            for x in (low[0], high[0])
            for y in (low[1], high[1])
            for z in (low[2], high[2])
        ]
    )
    if frame is not None:
        corners = corners @ frame  # coordinates along the frame's axes
    return corners.min(axis=0), corners.max(axis=0)


def head_mask(image: sitk.Image) -> tuple[sitk.Image, np.ndarray]:
    """(coarse copy of the image, boolean head mask on it): Otsu threshold on a 3 mm copy."""
    shrink = [max(1, int(round(_FOREGROUND_SPACING_MM / s))) for s in image.GetSpacing()]
    coarse = sitk.BinShrink(sitk.Cast(image, sitk.sitkFloat32), shrink)
    mask = sitk.GetArrayFromImage(sitk.OtsuThreshold(coarse, 0, 1)).astype(bool)
    return coarse, mask


def plan_network_grid(image: sitk.Image, spacing: float = NETWORK_SPACING_MM) -> NetworkGrid:
    """The network grid for ``image``: the head's bounding box, centred, padded to multiples of 16."""
    permutation, signs = closest_axes(image.GetDirection())
    frame = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)[:, permutation] * signs
    coarse, mask = head_mask(image)
    low, high = physical_bounds(coarse, mask, frame)
    extent = high - low
    voxels = _grid_voxels(extent, spacing)
    span = voxels * spacing
    start = (low + high) / 2 - span / 2
    # The frame's third axis points superior: when the head is too long, keep its top and drop the neck, and
    # bound the other two axes by the head within that slab only: shoulders below it would widen the grid
    # (and the network's work) for voxels that are cut off anyway.
    if extent[2] > span[2]:
        start[2] = high[2] - span[2]
        slab_low, slab_high = _bounds_above(coarse, mask, frame, start[2])
        low[:2], high[:2] = slab_low[:2], slab_high[:2]
        voxels[:2] = _grid_voxels(high[:2] - low[:2], spacing)
        span[:2] = voxels[:2] * spacing
        start[:2] = (low[:2] + high[:2]) / 2 - span[:2] / 2
    origin = frame @ (start + spacing / 2)  # the first voxel's centre, back in LPS
    return NetworkGrid(
        tuple(float(v) for v in origin), tuple(int(v) for v in voxels), tuple(float(v) for v in frame.flatten()), spacing
    )


def _grid_voxels(extent: np.ndarray, spacing: float) -> np.ndarray:
    """Voxels per axis covering ``extent`` mm: a multiple of 16, within the grid's bounds."""
    voxels = np.ceil(extent / spacing / SIZE_MULTIPLE).astype(int) * SIZE_MULTIPLE
    return np.clip(voxels, MIN_GRID_VOXELS, [MAX_GRID_VOXELS, MAX_GRID_VOXELS, MAX_GRID_HEIGHT_VOXELS][:len(voxels)])


def _bounds_above(coarse: sitk.Image, mask: np.ndarray, frame: np.ndarray, bottom: float):
    """Bounding box (frame coordinates, voxel corners) of the mask voxels whose centres lie above ``bottom`` along
    the frame's third (superior) axis; the whole mask's box when none does."""
    indices = np.argwhere(mask)[:, ::-1].astype(float)  # (i, j, k)
    matrix = np.asarray(coarse.GetDirection()).reshape(3, 3) @ np.diag(coarse.GetSpacing())
    centres = (indices @ matrix.T + np.asarray(coarse.GetOrigin())) @ frame
    above = np.zeros(mask.shape, dtype=bool)
    kept = centres[:, 2] >= bottom
    if kept.any():
        i, j, k = indices[kept].astype(int).T
        above[k, j, i] = True
    return physical_bounds(coarse, above if kept.any() else mask, frame)


def network_input(image: sitk.Image, grid: NetworkGrid) -> np.ndarray:
    """Resample ``image`` onto ``grid`` (linear) and normalise intensities: float32 array [1, 1, D, H, W]
    (C-contiguous), without torch."""
    minimum = float(sitk.GetArrayViewFromImage(image).min())
    # float32 out, interpolated from the input's own voxel type (no float32 copy of the whole input first)
    resampled = sitk.Resample(image, grid.reference_image(), sitk.Transform(), sitk.sitkLinear, minimum,
                              sitk.sitkFloat32)
    return normalise_array(sitk.GetArrayFromImage(resampled))[None, None]


def to_network(image: sitk.Image, grid: NetworkGrid) -> torch.Tensor:
    """``network_input`` as a torch tensor [1, 1, D, H, W] (sharing its memory)."""
    import torch

    return torch.from_numpy(network_input(image, grid))


def labels_to_grid(labels: sitk.Image, grid: NetworkGrid) -> np.ndarray:
    """A labelmap on ``grid`` by nearest neighbour (outside the labelmap: 0), as a [D, H, W] array: reference
    labels on the grid the network ran on, to score it there (the loss study at a coarse grid)."""
    resampled = sitk.Resample(labels, grid.reference_image(), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(resampled)


def isotropic_grid(image: sitk.Image, spacing: float) -> sitk.Image:
    """An empty image on an isotropic grid of ``spacing`` mm covering ``image``'s field of view (voxel corners
    to voxel corners), with ``image``'s axes: labels mapped onto it come from the same probabilities as on the
    input grid (``probabilities_to_image`` needs the network grid's axes, which are the input's)."""
    origin, size = isotropic_geometry(image.GetOrigin(), image.GetSpacing(), image.GetDirection(), image.GetSize(),
                                      spacing)
    reference = sitk.Image(list(size), sitk.sitkUInt8)
    reference.SetSpacing([float(spacing)] * 3)
    reference.SetDirection(image.GetDirection())
    reference.SetOrigin([float(v) for v in origin])
    return reference
