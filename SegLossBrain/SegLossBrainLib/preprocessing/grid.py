"""Between a user's volume and the network: the network grid, resampling there, and probabilities back.

The network grid is isotropic at ``NETWORK_SPACING_MM`` (1.5 mm). Its axes are the input's own axes,
permuted and flipped so that they point as close as possible to L, P, S (ITK's LPS identity): the network
always sees the head in the orientation it was trained in, and an oblique acquisition (usually aligned to
the anatomy) keeps its alignment instead of being rotated once more. Its extent is the head's bounding box,
rounded up to a multiple of 16 voxels and capped (``MAX_GRID_VOXELS`` across, ``MAX_GRID_HEIGHT_VOXELS`` along
the superior axis); when the head is longer than the cap (a scan with neck) the grid keeps the superior end,
where the brain is, and its other two axes cover the head within that slab only.

Because the two grids share axes, the map from an input voxel to network coordinates is separable (one
scale and offset per axis). Coming back, the network's probabilities (not its labels) are interpolated
trilinearly onto the input grid, one axis at a time and a slab of slices at a time, and only then turned
into labels by argmax: the labelmap has exactly the input's size, spacing, origin and direction, boundaries
are smooth at the input's resolution, and memory stays bounded. Input voxels outside the network grid are
background.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch

from .grid_constants import NETWORK_SPACING_MM, SIZE_MULTIPLE
from .intensity import normalise_intensity
from .output_grid import isotropic_geometry

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


def to_network(image: sitk.Image, grid: NetworkGrid) -> torch.Tensor:
    """Resample ``image`` onto ``grid`` (linear) and normalise intensities: tensor [1, 1, D, H, W]."""
    minimum = float(sitk.GetArrayViewFromImage(image).min())
    resampled = sitk.Resample(
        sitk.Cast(image, sitk.sitkFloat32), grid.reference_image(), sitk.Transform(), sitk.sitkLinear, minimum
    )
    tensor = torch.from_numpy(sitk.GetArrayFromImage(resampled))
    return normalise_intensity(tensor)[None, None]


def labels_to_grid(labels: sitk.Image, grid: NetworkGrid) -> np.ndarray:
    """A labelmap on ``grid`` by nearest neighbour (outside the labelmap: 0), as a [D, H, W] array: reference
    labels on the grid the network ran on, to score it there (the loss study at a coarse grid)."""
    resampled = sitk.Resample(labels, grid.reference_image(), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(resampled)


def _axis_maps(image: sitk.Image, grid: NetworkGrid) -> list[tuple[int, np.ndarray]]:
    """For each input axis b (i, j, k): (network axis, network continuous index of every input index along b).

    Requires the grids to share axes (``plan_network_grid`` guarantees it)."""
    to_grid = (
        np.asarray(grid.direction).reshape(3, 3).T
        @ np.asarray(image.GetDirection()).reshape(3, 3)
        @ np.diag(image.GetSpacing())
        / grid.spacing
    )  # input index -> grid index, linear part
    offset = np.asarray(grid.direction).reshape(3, 3).T @ (np.array(image.GetOrigin()) - grid.origin) / grid.spacing
    maps = []
    for b in range(3):
        a = int(np.argmax(np.abs(to_grid[:, b])))
        off_axis = np.delete(to_grid[:, b], a)
        if np.abs(off_axis).max() > 1e-5:
            raise ValueError("network grid axes are not the input's axes; plan it with plan_network_grid()")
        maps.append((a, to_grid[a, b] * np.arange(image.GetSize()[b]) + offset[a]))
    return maps


def _interpolation_indices(position: np.ndarray, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lower and upper neighbours and weight for linear interpolation at ``position`` in a volume padded by
    one background voxel on each side. As ITK's linear interpolator: within half a voxel outside the first
    or last voxel centre the edge value holds; further out is outside (the padding, background)."""
    inside = (position >= -0.5) & (position <= length - 0.5)
    padded = np.where(inside, np.clip(position, 0, length - 1) + 1, np.where(position < 0, 0, length + 1))
    lower = np.minimum(np.floor(padded), length).astype(np.int64)
    weight = padded - lower
    return torch.from_numpy(lower), torch.from_numpy(lower + 1), torch.from_numpy(weight).float()


def probabilities_to_image(
    probabilities: torch.Tensor, grid: NetworkGrid, image: sitk.Image, with_confidence: bool = False,
    slab_voxels: int = 1 << 20,
) -> tuple[sitk.Image, sitk.Image | None]:
    """Class probabilities on the network grid ([C, D, H, W]) -> (uint8 labelmap, optional float32
    max-probability map), both on exactly ``image``'s grid; equal to trilinear interpolation of every
    class's probability followed by argmax.

    Shortcut that keeps it exact: where all 8 grid voxels around an input voxel share the same argmax
    label L, every convex combination of them (trilinear weights are one) also has L as its argmax, so
    only voxels in cells with mixed labels (boundaries, a few percent of the head) need the full
    C-channel interpolation.
    """
    maps = _axis_maps(image, grid)
    # Pad one voxel of certain background around the grid, then order the tensor's axes as the input's
    # (k, j, i) so that each input axis reads along one tensor axis.
    volume = torch.nn.functional.pad(probabilities.float(), (1, 1, 1, 1, 1, 1))
    volume[0, [0, -1], :, :] = 1
    volume[0, :, [0, -1], :] = 1
    volume[0, :, :, [0, -1]] = 1
    tensor_axis = {0: 3, 1: 2, 2: 1}  # network axis (x, y, z) -> tensor dim in [C, D, H, W]
    volume = volume.permute(0, *[tensor_axis[maps[b][0]] for b in (2, 1, 0)])
    channels, depth, height, width = volume.shape
    per_voxel = volume.permute(1, 2, 3, 0).reshape(-1, channels).contiguous()  # channels-last rows for gathers
    max_grid, labels_grid = volume.max(dim=0)
    labels_grid = labels_grid.to(torch.uint8)
    # A cell (the 8 voxels from (d, h, w) to (d+1, h+1, w+1)) is uniform when all corners share a label.
    corner = labels_grid[:-1, :-1, :-1]
    uniform = torch.ones_like(corner, dtype=torch.bool)
    for dk in (0, 1):
        for dj in (0, 1):
            for di in (0, 1):
                uniform &= labels_grid[dk : depth - 1 + dk, dj : height - 1 + dj, di : width - 1 + di] == corner
    lengths = {2: depth - 2, 1: height - 2, 0: width - 2}
    lower, weight = {}, {}
    for b in range(3):
        low, _, w = _interpolation_indices(maps[b][1], lengths[b])
        # A position on the padded grid's last voxel has no upper neighbour: use the cell below, weight 1.
        last = low == lengths[b] + 1
        low[last] -= 1
        w[last] = 1.0
        lower[b], weight[b] = low, w
    size = image.GetSize()
    labels = np.zeros((size[2], size[1], size[0]), dtype=np.uint8)
    confidence = np.zeros(labels.shape, dtype=np.float32) if with_confidence else None
    slices_per_slab = max(1, slab_voxels // (size[0] * size[1]))
    for start in range(0, size[2], slices_per_slab):
        k_slice = slice(start, min(start + slices_per_slab, size[2]))
        cells = (lower[2][k_slice], lower[1], lower[0])
        slab_labels = corner[cells[0]][:, cells[1]][:, :, cells[2]]
        slab_uniform = uniform[cells[0]][:, cells[1]][:, :, cells[2]]
        mixed = torch.nonzero(~slab_uniform, as_tuple=True)
        if with_confidence:
            # In a uniform cell the label's probability is the maximum at every corner, so the
            # interpolated maximum is the interpolated max-probability map: one channel, separable.
            slab_confidence = max_grid
            for dim, b in ((0, 2), (1, 1), (2, 0)):
                w = weight[b][k_slice] if b == 2 else weight[b]
                shape = [1, 1, 1]
                shape[dim] = -1
                slab_confidence = torch.lerp(
                    slab_confidence.index_select(dim, cells[dim]),
                    slab_confidence.index_select(dim, cells[dim] + 1),
                    w.view(shape),
                )
        if mixed[0].numel():
            values = _interpolate_at(per_voxel, (height, width), cells, mixed, weight, k_slice)
            best, best_label = values.max(dim=1)
            slab_labels[mixed] = best_label.to(torch.uint8)
            if with_confidence:
                slab_confidence[mixed] = best
        labels[k_slice] = slab_labels.numpy()
        if with_confidence:
            confidence[k_slice] = slab_confidence.numpy()
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(image)
    confidence_image = None
    if confidence is not None:
        confidence_image = sitk.GetImageFromArray(confidence)
        confidence_image.CopyInformation(image)
    return label_image, confidence_image


def _interpolate_at(per_voxel, plane, cells, where, weight, k_slice, channel=None) -> torch.Tensor:
    """Trilinear interpolation at the slab voxels ``where`` (k, j, i index tensors): all channels
    ([N, C]) or, with ``channel`` (a [K, J, I] tensor of channel indices), that one channel per voxel."""
    height, width = plane
    k0, j0, i0 = cells[0][where[0]], cells[1][where[1]], cells[2][where[2]]
    wk, wj, wi = weight[2][k_slice][where[0]], weight[1][where[1]], weight[0][where[2]]
    pick = None if channel is None else channel[where]
    result = None
    for dk in (0, 1):
        for dj in (0, 1):
            for di in (0, 1):
                w = (wk if dk else 1 - wk) * (wj if dj else 1 - wj) * (wi if di else 1 - wi)
                rows = ((k0 + dk) * height + (j0 + dj)) * width + (i0 + di)
                values = per_voxel[rows] if pick is None else per_voxel[rows, pick]
                values.mul_(w[:, None] if pick is None else w)
                result = values if result is None else result.add_(values)
    return result


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
