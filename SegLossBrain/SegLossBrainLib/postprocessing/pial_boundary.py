"""The outer surface of the cortex decided at the input's resolution, by the image's own intensities.

Why: the network sees 1.5 mm voxels, and on 1 mm scans its cortex reaches about one input voxel further out
than FreeSurfer's pial surface. On both labelled dev scans most of the cortex voxels that aseg calls outside
(86 % and 82 %) are the single layer of voxels next to aseg's cortex, at intensities halfway between CSF and grey
matter: partial-volume voxels that the coarse grid cannot resolve but the input's intensities can.

What: in a band half a network voxel deep on each side of every boundary between cortex (cerebral or
cerebellar) and the outside (background or CSF) -- one input voxel at 1 mm -- each input voxel holding one of
those classes is decided between the two sides by

    log P(side | network) + log N(intensity | class)

where P is the network's probability interpolated at the voxel (summed over the side's classes), and each class
has a Gaussian measured in this image on the voxels it holds outside the band (median and MAD: robust to the
few mislabelled ones). No other class and no voxel outside the band can change, and a class with too few voxels
to measure (a cropped cerebellum, a stripped head without background) leaves its boundaries as they were.
Measured contrasts, not assumed ones: it works the same on inverted or unusual contrasts. numpy and SimpleITK
only (the CPU engine never imports torch).
"""
from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk

from ..preprocessing.back_projection import _axis_maps, _interpolation_indices

CORTEX = (2, 6)  # cerebral cortex, cerebellum cortex
OUTSIDE = (0, 16)  # background, CSF
MIN_VOXELS = 500  # fewer voxels than this outside the band: no intensity model for the class
MODEL_SAMPLE = 100_000  # at most about this many voxels (evenly spread) measure a class
BACKGROUND_REACH_MM = 6.0  # background is measured only this close to the brain (not the air around the head)


def _dilate(mask: np.ndarray, radius) -> np.ndarray:
    """Dilation of ``mask`` by a box of ``radius`` voxels per numpy axis: separable, each axis an OR of shifted
    views (several times faster than a box structuring element or running sums on a whole head)."""
    out = mask
    for axis, r in enumerate(int(r) for r in radius):
        if r <= 0:
            continue
        grown = out.copy()
        n = out.shape[axis]
        for shift in range(1, min(r, n - 1) + 1):
            ahead = [slice(None)] * 3
            behind = [slice(None)] * 3
            ahead[axis], behind[axis] = slice(shift, None), slice(None, n - shift)
            grown[tuple(behind)] |= out[tuple(ahead)]
            grown[tuple(ahead)] |= out[tuple(behind)]
        out = grown
    return out


def _either(array: np.ndarray, pair) -> np.ndarray:
    return (array == pair[0]) | (array == pair[1])  # np.isin is several times slower for two values


def _class_models(labels: np.ndarray, intensities: np.ndarray, measured: np.ndarray) -> dict[int, tuple]:
    """{class: (median, robust std)} for the cortex and outside classes with enough voxels in ``measured``."""
    finite = intensities[np.isfinite(intensities)]
    floor = 1e-3 * float(finite.max() - finite.min()) if finite.size else 0.0
    models = {}
    for index in CORTEX + OUTSIDE:
        values = intensities[(labels == index) & measured]
        if values.size < MIN_VOXELS:
            continue
        values = values[::max(1, values.size // MODEL_SAMPLE)]  # a median needs no million voxels
        centre = float(np.median(values))
        spread = 1.4826 * float(np.median(np.abs(values - centre)))
        models[index] = (centre, max(spread, floor, 1e-12))
    return models


def _log_likelihood(values: np.ndarray, model) -> np.ndarray:
    centre, spread = model
    return -0.5 * ((values - centre) / spread) ** 2 - math.log(spread)


def _probabilities_at(probabilities, grid, image: sitk.Image, voxels: tuple, classes) -> dict[int, np.ndarray]:
    """The network's probabilities of ``classes`` interpolated trilinearly at input voxels ``voxels`` (numpy
    index arrays), as the back-projection interpolates them."""
    shape = probabilities.shape[1:]  # network grid, numpy order (z, y, x)
    corners = [None, None, None]  # per network numpy axis: (lower, upper, weight) for each voxel
    for b, (a, positions) in enumerate(_axis_maps(image, grid)):
        axis = 2 - a  # network grid axis a (x, y, z) is numpy axis 2 - a
        lower, upper, weight = _interpolation_indices(positions, shape[axis])
        along = voxels[2 - b]  # input axis b is numpy axis 2 - b
        corners[axis] = (lower[along], upper[along], weight[along])
    # only the part of the network grid the voxels' corners touch, padded by one voxel as the indices expect;
    # the 8 corners as flat indices into that box and their weights, shared by every class
    low = [int(c[0].min()) for c in corners]
    high = [int(c[1].max()) + 1 for c in corners]
    size = [h - l for l, h in zip(low, high)]
    strides = (size[1] * size[2], size[2], 1)
    offsets = [((c[0] - l) * stride, (c[1] - l) * stride) for c, l, stride in zip(corners, low, strides)]
    along = [(1 - c[2], c[2]) for c in corners]  # per axis: weight of the lower and of the upper neighbour
    flat, weights = [], []
    for dz in (0, 1):
        for dy in (0, 1):
            zy, zy_weight = offsets[0][dz] + offsets[1][dy], along[0][dz] * along[1][dy]
            for dx in (0, 1):
                flat.append(zy + offsets[2][dx])
                weights.append(zy_weight * along[2][dx])
    out = {}
    for index in classes:
        padded = np.pad(np.asarray(probabilities[index], dtype=np.float32), 1,
                        constant_values=1.0 if index == 0 else 0.0)  # outside the grid is background
        box = np.ascontiguousarray(padded[low[0]:high[0], low[1]:high[1], low[2]:high[2]]).ravel()
        value = np.zeros(len(voxels[0]), dtype=np.float32)
        for where, weight in zip(flat, weights):
            value += weight * box[where]
        out[index] = value
    return out


def refine_pial_boundary(labels: sitk.Image, intensities: sitk.Image, probabilities, grid,
                         confidence: sitk.Image | None = None) -> tuple[sitk.Image, sitk.Image | None]:
    """(``labels`` with the cortex/outside boundary decided by intensity, ``confidence`` to match or None).

    ``labels``: structure indices on the input grid; ``intensities``: the input image on that grid;
    ``probabilities``: the network's [C, D, H, W] on ``grid`` (the ``grid.NetworkGrid`` they were computed on),
    numpy or a CPU tensor; ``confidence``: the probability of each voxel's label, as the back-projection gives
    it, or None. A voxel that changes label gets its new label's interpolated probability as its confidence."""
    array = sitk.GetArrayFromImage(labels)
    brain = array != 0
    if not brain.any():
        return labels, confidence
    # the work is done in the box around the labelled brain plus the background reach: most of a head is air
    spacing = np.array(labels.GetSpacing())
    margin = np.maximum(np.ceil(BACKGROUND_REACH_MM / spacing), 1).astype(int)[::-1] + 1  # numpy order
    nonzero = [np.flatnonzero(brain.any(axis=tuple(a for a in range(3) if a != n))) for n in range(3)]
    low = [max(int(nz[0]) - m, 0) for nz, m in zip(nonzero, margin)]
    high = [min(int(nz[-1]) + m + 1, size) for nz, m, size in zip(nonzero, margin, array.shape)]
    box = tuple(slice(a, b) for a, b in zip(low, high))
    region = sitk.RegionOfInterest(labels, [int(h - l) for l, h in zip(low, high)][::-1], [int(l) for l in low][::-1])
    moved, new_labels, new_probabilities = _refine(
        array[box], sitk.GetArrayViewFromImage(intensities)[box].astype(np.float32), region, probabilities, grid)
    if not len(new_labels):
        return labels, confidence
    moved = tuple(index + start for index, start in zip(moved, low))
    array[moved] = new_labels
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(labels)
    if confidence is not None:
        values = sitk.GetArrayFromImage(confidence)
        values[moved] = new_probabilities
        confidence = sitk.GetImageFromArray(values)
        confidence.CopyInformation(labels)
    return out, confidence


def _refine(array: np.ndarray, values: np.ndarray, region: sitk.Image, probabilities, grid) -> tuple:
    """The refinement on one box of the input grid (``region``: the box as an image, for its geometry):
    (indices of the voxels that change, in the box; their new labels; those labels' probabilities)."""
    unchanged = (tuple(np.zeros(0, np.int64) for _ in range(3)), np.zeros(0, array.dtype), np.zeros(0, np.float32))
    cortex, outside = _either(array, CORTEX), _either(array, OUTSIDE)
    if not cortex.any() or not outside.any():
        return unchanged
    spacing = np.array(region.GetSpacing())
    reach = np.maximum(np.ceil(grid.spacing / 2 / spacing), 1)[::-1]  # half a network voxel; numpy order
    band = (cortex & _dilate(outside, reach)) | (outside & _dilate(cortex, reach))
    near_brain = _dilate(~outside, np.maximum(np.ceil(BACKGROUND_REACH_MM / spacing), 1)[::-1])
    models = _class_models(array, values, ~band & (near_brain | (array != 0)))
    usable_cortex = [c for c in CORTEX if c in models]
    usable_outside = [c for c in OUTSIDE if c in models]
    if not usable_cortex or not usable_outside:
        return unchanged
    voxels = np.nonzero(band)
    p = _probabilities_at(probabilities, grid, region, voxels, CORTEX + OUTSIDE)
    tiny = np.float32(1e-6)
    inside = values[voxels]
    # each side's class: the network's more probable one; its score: the side's probability and that class's fit
    cortex_class = np.where(p[2] >= p[6], 2, 6)
    cortex_fit = np.full(inside.shape, -np.inf)
    for c in usable_cortex:
        cortex_fit = np.where(cortex_class == c, _log_likelihood(inside, models[c]), cortex_fit)
    outside_fits = {c: _log_likelihood(inside, models[c]) for c in usable_outside}
    if len(usable_outside) == 1:
        outside_class = np.full(inside.shape, usable_outside[0])
    else:
        outside_class = np.where(np.log(np.maximum(p[0], tiny)) + outside_fits[0]
                                 >= np.log(np.maximum(p[16], tiny)) + outside_fits[16], 0, 16)
    outside_fit = np.where(outside_class == 0, outside_fits.get(0, -np.inf), outside_fits.get(16, -np.inf))
    cortex_score = np.log(np.maximum(p[2] + p[6], tiny)) + cortex_fit
    outside_score = np.log(np.maximum(p[0] + p[16], tiny)) + outside_fit
    decided = np.isfinite(cortex_fit) & np.isfinite(outside_fit)
    was_cortex = _either(array[voxels], CORTEX)
    # only a change of side moves a voxel: a voxel staying on its side keeps its label
    to_outside = decided & was_cortex & (outside_score > cortex_score)
    to_cortex = decided & ~was_cortex & (cortex_score > outside_score)
    move = to_outside | to_cortex
    new_labels = np.where(to_outside, outside_class, cortex_class)[move].astype(array.dtype)
    probability = np.zeros(new_labels.shape, np.float32)  # the new label's own interpolated probability
    for c in CORTEX + OUTSIDE:
        probability[new_labels == c] = p[c][move][new_labels == c]
    return tuple(v[move] for v in voxels), new_labels, probability
