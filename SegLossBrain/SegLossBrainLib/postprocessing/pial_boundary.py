"""The outer surface of the cortex decided at the input's resolution, by the image's own intensities.

Why: the network sees 1.5 mm voxels, and on 1 mm scans its cortex reaches about one input voxel further out
than FreeSurfer's pial surface. On both labelled dev scans most of the cortex voxels that aseg calls outside
(86 % and 82 %) are the single layer of voxels next to aseg's cortex, at intensities halfway between CSF and grey
matter: partial-volume voxels that the coarse grid cannot resolve but the input's intensities can.

What: in a band one network voxel wide around every boundary between cortex (cerebral or cerebellar) and the
outside (background or CSF), each input voxel holding one of those classes is decided between the two sides by

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
BACKGROUND_REACH_MM = 6.0  # background is measured only this close to the brain (not the air around the head)


def _dilate(mask: np.ndarray, radius) -> np.ndarray:
    """Dilation of ``mask`` by a box of ``radius`` voxels per numpy axis: separable, one running sum per axis
    (several times faster than a box structuring element on a whole head)."""
    out = mask
    for axis, r in enumerate(int(r) for r in radius):
        if r <= 0:
            continue
        moved = np.moveaxis(out, axis, 0)
        counts = np.zeros((moved.shape[0] + 1,) + moved.shape[1:], dtype=np.int16)  # an axis is < 32768 voxels
        np.cumsum(moved, axis=0, dtype=np.int16, out=counts[1:])
        n = moved.shape[0]
        upper = np.minimum(np.arange(n) + r + 1, n)
        lower = np.maximum(np.arange(n) - r, 0)
        out = np.moveaxis(counts[upper] - counts[lower] > 0, 0, axis)
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
    # only the part of the network grid the voxels' corners touch, padded by one voxel as the indices expect
    low = [int(c[0].min()) for c in corners]
    high = [int(c[1].max()) + 1 for c in corners]
    corners = [(lo - l, hi - l, w) for (lo, hi, w), l in zip(corners, low)]
    out = {}
    for index in classes:
        padded = np.pad(np.asarray(probabilities[index], dtype=np.float32), 1,
                        constant_values=1.0 if index == 0 else 0.0)  # outside the grid is background
        padded = padded[low[0]:high[0], low[1]:high[1], low[2]:high[2]]
        value = np.zeros(len(voxels[0]), dtype=np.float32)
        weights = [(1 - w, w) for _, _, w in corners]
        for dz in (0, 1):
            for dy in (0, 1):
                for dx in (0, 1):
                    z, y, x = (corners[n][d] for n, d in enumerate((dz, dy, dx)))
                    value += weights[0][dz] * weights[1][dy] * weights[2][dx] * padded[z, y, x]
        out[index] = value
    return out


def refine_pial_boundary(labels: sitk.Image, intensities: sitk.Image, probabilities, grid) -> sitk.Image:
    """``labels`` (structure indices on the input grid) with the cortex/outside boundary decided by intensity.

    ``intensities``: the input image on ``labels``' grid; ``probabilities``: the network's [C, D, H, W] on
    ``grid`` (the ``grid.NetworkGrid`` they were computed on), numpy or a CPU tensor."""
    array = sitk.GetArrayFromImage(labels)
    brain = array != 0
    if not brain.any():
        return labels
    # the work is done in the box around the labelled brain plus the background reach: most of a head is air
    spacing = np.array(labels.GetSpacing())
    margin = np.maximum(np.ceil(BACKGROUND_REACH_MM / spacing), 1).astype(int)[::-1] + 1  # numpy order
    nonzero = [np.flatnonzero(brain.any(axis=tuple(a for a in range(3) if a != n))) for n in range(3)]
    low = [max(int(nz[0]) - m, 0) for nz, m in zip(nonzero, margin)]
    high = [min(int(nz[-1]) + m + 1, size) for nz, m, size in zip(nonzero, margin, array.shape)]
    box = tuple(slice(a, b) for a, b in zip(low, high))
    region = sitk.RegionOfInterest(labels, [int(h - l) for l, h in zip(low, high)][::-1], [int(l) for l in low][::-1])
    refined = array.copy()
    refined[box] = _refine(array[box], sitk.GetArrayFromImage(intensities)[box].astype(np.float32), region,
                           probabilities, grid)
    out = sitk.GetImageFromArray(refined)
    out.CopyInformation(labels)
    return out


def _refine(array: np.ndarray, values: np.ndarray, region: sitk.Image, probabilities, grid) -> np.ndarray:
    """The refinement on one box of the input grid (``region``: the box as an image, for its geometry)."""
    cortex, outside = _either(array, CORTEX), _either(array, OUTSIDE)
    if not cortex.any() or not outside.any():
        return array
    spacing = np.array(region.GetSpacing())
    reach = np.maximum(np.ceil(grid.spacing / spacing), 1)[::-1]  # numpy order
    band = (cortex & _dilate(outside, reach)) | (outside & _dilate(cortex, reach))
    near_brain = _dilate(~outside, np.maximum(np.ceil(BACKGROUND_REACH_MM / spacing), 1)[::-1])
    models = _class_models(array, values, ~band & (near_brain | (array != 0)))
    usable_cortex = [c for c in CORTEX if c in models]
    usable_outside = [c for c in OUTSIDE if c in models]
    if not usable_cortex or not usable_outside:
        return array
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
    refined = array.copy()
    refined[tuple(v[to_outside] for v in voxels)] = outside_class[to_outside]
    refined[tuple(v[to_cortex] for v in voxels)] = cortex_class[to_cortex]
    return refined
