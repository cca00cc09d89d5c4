"""Skull-on heads drawn FreeSurfer's way: a brain-only label map placed inside a full-head label map.

The brain-only maps (``fs_label_maps/``) draw the small structures the way users' reference labels are drawn, but
they have nothing around the brain, so on their own they only make skull-stripped-looking images; the full-head
maps make skull-on images, but with their own (manual) convention inside the brain. A network that sees FreeSurfer's
convention only without a skull may fall back to the other convention when a skull is there. A composite gives it
both at once: the full-head map's skull, scalp, eyes and air around the brain-only map's brain.

How: the brain-only map's brain is aligned to the full-head map's brain (an affine registration of the two brain
masks, started from their centres and per-axis spreads), read onto the full-head map's grid by nearest neighbour,
and written over the full-head map's intracranial content. Intracranial voxels the placed brain leaves empty (its
sulci, and any gap to the full-head map's skull) become CSF, as the full-head maps label all CSF; brain voxels
that land on the full-head map's skull keep the brain's label.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..labels import CSF_INDEX, load_label_table

_CSF_VALUE = 24  # FreeSurfer's CSF, the label the full-head maps give all CSF
_REGISTRATION_SPACING_MM = 3.0


def label_array(image: sitk.Image) -> np.ndarray:
    """The label values as int64 (several training maps are stored as float32)."""
    return np.rint(sitk.GetArrayFromImage(image)).astype(np.int64)


def brain_mask(labels: np.ndarray) -> np.ndarray:
    """Voxels of the 18 brain structures (not background, not CSF); unknown values count as outside."""
    table = load_label_table()
    lut = table.map_freesurfer(np.arange(int(labels.max()) + 1))
    structure = lut[labels]
    return (structure > 0) & (structure != CSF_INDEX)


def _mask_image(labels: sitk.Image, mask: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(mask.astype(np.float32))
    image.CopyInformation(labels)
    # a smooth mask gives the metric a gradient beyond the boundary voxels
    return sitk.SmoothingRecursiveGaussian(image, _REGISTRATION_SPACING_MM / 2)


def _moments(image: sitk.Image, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre (LPS mm) and per-axis standard deviation (mm, physical axes) of a mask."""
    kji = np.argwhere(mask)[::7]  # a regular subsample is plenty for two moments
    points = _index_to_physical(image, kji[:, ::-1].astype(np.float64))
    return points.mean(axis=0), points.std(axis=0)


def _index_to_physical(image: sitk.Image, ijk: np.ndarray) -> np.ndarray:
    matrix = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    return ijk @ matrix.T + np.array(image.GetOrigin())


def align_brain(brain_map: sitk.Image, head_map: sitk.Image, seed: int = 0) -> sitk.AffineTransform:
    """Affine transform from the head map's physical space to the brain map's (the direction ITK resamples in)
    that lays the brain map's brain onto the head map's brain."""
    head_mask = brain_mask(label_array(head_map))
    brain = brain_mask(label_array(brain_map))
    if not head_mask.any() or not brain.any():
        raise ValueError("both label maps must hold brain structures to be aligned")
    head_centre, head_spread = _moments(head_map, head_mask)
    brain_centre, brain_spread = _moments(brain_map, brain)
    initial = sitk.AffineTransform(3)
    initial.SetCenter(head_centre.tolist())
    initial.SetMatrix(np.diag(brain_spread / head_spread).ravel().tolist())
    initial.SetTranslation((brain_centre - head_centre).tolist())

    fixed, moving = _mask_image(head_map, head_mask), _mask_image(brain_map, brain)
    registration = sitk.ImageRegistrationMethod()
    # one thread and a regular sample: the same maps give the same composite on every call, so a resumed run
    # draws the heads it would have drawn (ITK's random sampling and threaded sums differ from call to call)
    registration.SetNumberOfThreads(1)
    registration.SetMetricAsMeanSquares()
    registration.SetMetricSamplingStrategy(registration.REGULAR)
    registration.SetMetricSamplingPercentage(0.1, seed + 1)  # SimpleITK reads seed 0 as "the wall clock"
    registration.SetInterpolator(sitk.sitkLinear)
    registration.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3, numberOfIterations=100,
                                                          relaxationFactor=0.6)
    registration.SetOptimizerScalesFromPhysicalShift()
    registration.SetShrinkFactorsPerLevel([int(round(_REGISTRATION_SPACING_MM / min(head_map.GetSpacing())))])
    registration.SetSmoothingSigmasPerLevel([0])
    registration.SetInitialTransform(initial, inPlace=False)
    result = registration.Execute(fixed, moving)
    return sitk.AffineTransform(sitk.CompositeTransform(result).GetNthTransform(0))


def composite_head(brain_map: sitk.Image, head_map: sitk.Image, seed: int = 0) -> sitk.Image:
    """The head map with its intracranial content replaced by ``brain_map``'s brain, on the head map's grid."""
    transform = align_brain(brain_map, head_map, seed)
    placed = label_array(sitk.Resample(brain_map, head_map, transform, sitk.sitkNearestNeighbor, 0,
                                       brain_map.GetPixelID()))
    head = label_array(head_map)
    table = load_label_table()
    structure = table.map_freesurfer(np.arange(int(max(head.max(), placed.max())) + 1))
    head_structure = structure[head]
    # intracranial: the head map's brain structures and CSF, plus unmerged brain values (vessels, 5th ventricle)
    intracranial = (head_structure > 0) | np.isin(head, (30, 62, 72))
    result = np.where(intracranial, _CSF_VALUE, head).astype(np.int32)
    result = np.where(placed > 0, placed, result)
    image = sitk.GetImageFromArray(result)
    image.CopyInformation(head_map)
    return image


def composite_pairs(brain_maps: list, head_maps: list, per_brain: int) -> list[tuple]:
    """(brain map, head map) pairs: each brain map inside ``per_brain`` head maps, the head maps taken in turn so
    that every head is used about equally."""
    if per_brain > len(head_maps):
        raise ValueError(f"{per_brain} composite heads per brain-only map, but only {len(head_maps)} full-head maps")
    return [(brain, head_maps[(i * per_brain + j) % len(head_maps)])
            for i, brain in enumerate(brain_maps) for j in range(per_brain)]


def composite_sources(brain_maps: list, head_maps: list, per_brain: int, device="cpu", seed: int = 0) -> list:
    """The composite heads of ``composite_pairs`` as generator label-map sources (made in memory, a few seconds
    each)."""
    from pathlib import Path

    from .geometry import LabelMapSource

    sources = []
    for brain, head in composite_pairs(list(brain_maps), list(head_maps), per_brain):
        image = composite_head(sitk.ReadImage(str(brain)), sitk.ReadImage(str(head)), seed)
        matrix = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3) @ np.diag(image.GetSpacing())
        affine = np.eye(4)
        affine[:3, :3], affine[:3, 3] = matrix, image.GetOrigin()
        sources.append(LabelMapSource.from_array(sitk.GetArrayFromImage(image), affine, device=device,
                                                 name=f"{Path(brain).name} in {Path(head).name}"))
    return sources
