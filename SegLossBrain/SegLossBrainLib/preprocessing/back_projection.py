"""Network probabilities back to the input grid: labels (and confidence) on exactly the input's grid.

The network grid shares the input's axes (``grid.plan_network_grid``), so the map from an input voxel to network
coordinates is separable (one scale and offset per axis). The network's probabilities (not its labels) are
interpolated trilinearly onto the input grid, a slab of slices at a time, and only then turned into labels by
argmax: the labelmap has exactly the input's size, spacing, origin and direction, boundaries are smooth at the
input's resolution, and memory stays bounded. Input voxels outside the network grid are background. numpy only:
the CPU engine never imports torch.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

if TYPE_CHECKING:
    import torch


def _axis_maps(image: sitk.Image, grid) -> list[tuple[int, np.ndarray]]:
    """For each input axis b (i, j, k): (network axis, network continuous index of every input index along b).

    ``grid``: a ``grid.NetworkGrid`` (not imported here: grid.py imports this module). Requires the grids to share
    axes (``plan_network_grid`` guarantees it)."""
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


def _interpolation_indices(position: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower and upper neighbours and (float32) weight for linear interpolation at ``position`` in a volume
    padded by one background voxel on each side. As ITK's linear interpolator: within half a voxel outside the
    first or last voxel centre the edge value holds; further out is outside (the padding, background)."""
    inside = (position >= -0.5) & (position <= length - 0.5)
    padded = np.where(inside, np.clip(position, 0, length - 1) + 1, np.where(position < 0, 0, length + 1))
    lower = np.minimum(np.floor(padded), length).astype(np.int64)
    weight = padded - lower
    return lower, lower + 1, weight.astype(np.float32)


_MIXED = 255  # cell code: its corners disagree on the argmax (labels are uint8: at most 255 classes)
_WORKERS = min(2, os.cpu_count() or 1)  # numpy releases the GIL in the array work below
_ROUNDING = 2e-6  # relative bound on float32 rounding in an interpolated probability (about 14 roundings of 2**-24)


def _axis(position: np.ndarray, length: int, stride: int) -> SimpleNamespace:
    """Interpolation along one input axis, per input index: its cell (``lower`` neighbour on the padded grid) and,
    for the (lower, upper) neighbours, ``weights``, ``offsets`` in one channel of the unpadded grid (clipped into
    it) and whether they are ``outside`` (the padding); ``edge``: either is."""
    lower, _, weight = _interpolation_indices(position, length)
    neighbours = (lower, lower + 1)
    outside = tuple((n == 0) | (n == length + 1) for n in neighbours)
    offsets = tuple(np.clip(n - 1, 0, length - 1).astype(np.intp) * stride for n in neighbours)
    return SimpleNamespace(lower=lower.astype(np.intp), weights=(1 - weight, weight), offsets=offsets,
                           outside=outside, edge=outside[0] | outside[1])


def _grid_top2(probabilities: np.ndarray, pool: ThreadPoolExecutor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first maximal channel as uint8, its probability, the second largest probability) at every grid voxel. A
    loop over channels on blocks of a few slices: np.argmax along the channel axis of a channel-first array reads
    it with a stride (several times slower), and a block's channels stay in cache between the comparisons."""
    channels, depth = probabilities.shape[:2]
    labels = np.zeros(probabilities.shape[1:], dtype=np.uint8)
    maxima = probabilities[0].copy()
    seconds = np.full(maxima.shape, -np.inf, dtype=np.float32)
    slices = max(1, (1 << 16) // (probabilities[0, 0].size or 1))

    def block(first: int) -> None:
        part = slice(first, first + slices)
        best, second, label = maxima[part], seconds[part], labels[part]
        smaller, greater = np.empty_like(best), np.empty(best.shape, dtype=bool)
        for channel in range(1, channels):
            values = probabilities[channel, part]
            np.maximum(second, np.minimum(best, values, out=smaller), out=second)
            np.greater(values, best, out=greater)  # strictly: a tie keeps the first channel
            np.copyto(label, np.uint8(channel), where=greater)
            np.maximum(best, values, out=best)

    list(pool.map(block, range(0, depth, slices)))
    return labels, maxima, seconds


def _cells(labels_grid: np.ndarray, second_grid: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Per cell of the padded grid (the 8 voxels from (k, j, i) to (k+1, j+1, i+1)): the label of its corners
    when they share it, else _MIXED; and, for mixed cells (flat C-order arrays), (smallest label, largest label,
    bound). When the corners hold only these two labels, every other class is at most the second-largest
    probability at each corner, so its interpolated probability is at most the bound (their maximum, plus float32
    rounding, for nonnegative probabilities); the bound is infinite when the corners hold more labels."""
    depth, height, width = labels_grid.shape
    shifts = [(dk, dj, di) for dk in (0, 1) for dj in (0, 1) for di in (0, 1)]
    corner = labels_grid[:-1, :-1, :-1]
    uniform = np.ones(corner.shape, dtype=bool)
    for dk, dj, di in shifts[1:]:
        uniform &= labels_grid[dk : depth - 1 + dk, dj : height - 1 + dj, di : width - 1 + di] == corner
    cells = np.full(corner.shape, _MIXED, dtype=np.uint8)
    np.copyto(cells, corner, where=uniform)
    mixed = np.flatnonzero(~uniform)
    first = np.ravel_multi_index(np.unravel_index(mixed, corner.shape), labels_grid.shape)
    corners = [first + (dk * height + dj) * width + di for dk, dj, di in shifts]  # flat indices: faster gathers
    corner_labels = np.stack([labels_grid.reshape(-1).take(c) for c in corners])
    low, high = corner_labels.min(axis=0), corner_labels.max(axis=0)
    bound = np.stack([second_grid.reshape(-1).take(c) for c in corners]).max(axis=0) * np.float32(1 + _ROUNDING)
    bound[~((corner_labels == low) | (corner_labels == high)).all(axis=0)] = np.inf
    pairs = (np.empty(cells.size, np.uint8), np.empty(cells.size, np.uint8), np.empty(cells.size, np.float32))
    for array, values in zip(pairs, (low, high, bound)):
        array[mixed] = values  # only mixed cells are ever read
    return cells, pairs


def _lerp(low: np.ndarray, high: np.ndarray, weight: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """low + weight * (high - low), in float32, overwriting ``high``."""
    high -= low
    high *= weight
    return np.add(low, high, out=high if out is None else out)


def probabilities_to_image(
    probabilities: np.ndarray | torch.Tensor, grid, image: sitk.Image,
    with_confidence: bool = False, slab_voxels: int = 1 << 20,
) -> tuple[sitk.Image, sitk.Image | None]:
    """Class probabilities on the network grid ([C, D, H, W], nonnegative; a numpy array or a CPU torch tensor)
    -> (uint8 labelmap, optional float32 max-probability map), both on exactly ``image``'s grid; equal to
    trilinear interpolation of every class's probability followed by argmax (the first maximal class on a tie).

    Shortcut that keeps it exact: where all 8 grid voxels around an input voxel share the same argmax
    label L, every convex combination of them (trilinear weights are one) also has L as its argmax, so
    only voxels in cells with mixed labels (boundaries, a few percent of the head) need the full
    C-channel interpolation; and in a cell whose corners hold two labels, those two classes' interpolation
    suffices when the larger exceeds a bound on every other class (``_cells``).
    """
    if not isinstance(probabilities, np.ndarray) and hasattr(probabilities, "detach"):  # torch, not imported here
        probabilities = probabilities.detach().cpu().float()  # each a no-op for a CPU float32 tensor
    probabilities = np.ascontiguousarray(probabilities, dtype=np.float32)  # no copy of a contiguous float32 one
    channels, grid_shape = probabilities.shape[0], probabilities.shape[1:]
    if channels > _MIXED:
        raise ValueError(f"{channels} classes do not fit a uint8 labelmap")
    maps = _axis_maps(image, grid)
    array_axis = {0: 2, 1: 1, 2: 0}  # network axis (x, y, z) -> axis of the [D, H, W] grid
    order = [array_axis[maps[b][0]] for b in (2, 1, 0)]  # grid axes read along the input's (k, j, i)
    strides = (grid_shape[1] * grid_shape[2], grid_shape[2], 1)  # elements, within one channel
    axes = [_axis(maps[b][1], grid_shape[order[2 - b]], strides[order[2 - b]]) for b in range(3)]
    size = image.GetSize()
    labels = np.empty((size[2], size[1], size[0]), dtype=np.uint8)
    confidence = np.empty(labels.shape, dtype=np.float32) if with_confidence else None
    flat = probabilities.reshape(channels, -1)
    with ThreadPoolExecutor(_WORKERS) as pool:
        labels_grid, max_grid, second_grid = _grid_top2(probabilities, pool)
        # One voxel of certain background (label 0, probability 1, others 0) around the grid, only on these
        # single-channel grids (_interpolate fills in the padding's channels), axes in the input's order.
        max_grid = np.ascontiguousarray(np.pad(max_grid, 1, constant_values=1).transpose(order))
        cells, pairs = _cells(*(np.ascontiguousarray(np.pad(volume, 1).transpose(order))
                                for volume in (labels_grid, second_grid)))
        slices_per_slab = max(1, slab_voxels // (size[0] * size[1]))

        def slab(start: int) -> None:
            part = slice(start, min(start + slices_per_slab, size[2]))
            cell_k, cell_j, cell_i = axes[2].lower[part], axes[1].lower, axes[0].lower
            slab_labels = labels[part]
            np.take(np.take(np.take(cells, cell_k, 0), cell_j, 1), cell_i, 2, out=slab_labels)
            if with_confidence:
                # In a uniform cell the label's probability is the maximum at every corner, so the
                # interpolated maximum is the interpolated max-probability map: one channel, separable.
                value = _lerp(np.take(max_grid, cell_k, 0), np.take(max_grid, cell_k + 1, 0),
                              axes[2].weights[1][part, None, None])
                value = _lerp(np.take(value, cell_j, 1), np.take(value, cell_j + 1, 1), axes[1].weights[1][:, None])
                _lerp(np.take(value, cell_i, 2), np.take(value, cell_i + 1, 2), axes[0].weights[1], confidence[part])
            found = np.flatnonzero(slab_labels == _MIXED)  # several times faster than np.nonzero's three arrays
            if found.size:
                k, j, i = np.unravel_index(found, slab_labels.shape)
                best, best_label = _mixed_voxels(flat, cells.shape, pairs, axes, (k + start, j, i))
                np.put(slab_labels, found, best_label)
                if with_confidence:
                    np.put(confidence[part], found, best)

        list(pool.map(slab, range(0, size[2], slices_per_slab)))
    results = [None if array is None else sitk.GetImageFromArray(array) for array in (labels, confidence)]
    for result in results:
        if result is not None:
            result.CopyInformation(image)
    return results[0], results[1]


def _mixed_voxels(flat: np.ndarray, cells_shape, pairs, axes: list[SimpleNamespace], where) -> tuple[np.ndarray, ...]:
    """(maximum, first maximal class) of the interpolated probabilities at the input voxels ``where`` (k, j, i),
    all in mixed cells: first from the cell's two labels, then, where these do not settle it, from all classes."""
    cell = np.ravel_multi_index([axes[b].lower[index] for b, index in zip((2, 1, 0), where)], cells_shape)
    low, high, bound = (array[cell] for array in pairs)
    candidates = np.stack([low, high])
    best, label = _best(_interpolate(flat, axes, where, candidates), candidates)
    unsettled = np.flatnonzero(best <= bound)
    if unsettled.size:
        every = np.arange(flat.shape[0], dtype=np.uint8)[:, None]
        rest = _interpolate(flat, axes, tuple(index[unsettled] for index in where), every)
        best[unsettled], label[unsettled] = _best(rest, every)
    return best, label


def _interpolate(flat: np.ndarray, axes: list[SimpleNamespace], where, classes: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of the probabilities (``flat``: [C, D*H*W]) of ``classes`` ([K, N] or [K, 1] class
    indices) at the input voxels ``where`` (k, j, i index arrays): [K, N]. The same float32 operations in the same
    order for any class, whichever others come with it, so the values are the same bit for bit."""
    k, j, i = where
    weights = [(axes[b].weights[0][index], axes[b].weights[1][index]) for b, index in ((2, k), (1, j), (0, i))]
    base = classes.astype(np.intp) * flat.shape[1]
    # A neighbour in the padding is background (probability 1 for class 0): rare, at the grid's faces only.
    edge = np.flatnonzero(axes[2].edge[k] | axes[1].edge[j] | axes[0].edge[i])
    background = np.broadcast_to(classes == 0, (len(classes), len(k)))
    result = None
    for dk in (0, 1):
        rows_k, weight_k = axes[2].offsets[dk][k], weights[0][dk]
        for dj in (0, 1):
            rows_kj, weight_kj = rows_k + axes[1].offsets[dj][j], weight_k * weights[1][dj]
            for di in (0, 1):
                values = np.take(flat.reshape(-1), base + (rows_kj + axes[0].offsets[di][i]))
                if edge.size:
                    out = edge[axes[2].outside[dk][k[edge]] | axes[1].outside[dj][j[edge]] |
                               axes[0].outside[di][i[edge]]]
                    values[:, out] = background[:, out]
                values *= weight_kj * weights[2][di]
                result = values if result is None else np.add(result, values, out=result)
    return result


def _best(values: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(maximum, first maximal class) over the rows of ``values`` ([K, N]), of ascending ``classes``."""
    best = values[0].copy()
    label = np.broadcast_to(classes[0], best.shape).copy()
    for row in range(1, len(values)):
        np.copyto(label, classes[row], where=values[row] > best)  # strictly: a tie keeps the smaller class
        np.maximum(best, values[row], out=best)
    return best, label
