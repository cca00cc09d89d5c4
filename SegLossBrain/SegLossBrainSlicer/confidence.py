"""Which structures the network was least sure of, and where to look at them.

The engine writes a per-voxel confidence (the winning class's probability). Averaged over each predicted
structure it ranks structures for review; a click on one centres the slice views on it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .volume_files import ijk_to_ras

# How many structures the "lowest confidence" list shows.
DEFAULT_COUNT = 5


@dataclass(frozen=True)
class StructureConfidence:
    index: int
    name: str
    mean: float
    voxels: int


def mean_confidence(labels: np.ndarray, confidence: np.ndarray, num_classes: int) -> dict[int, float]:
    """{structure index: mean confidence over its voxels} for every structure present (background excluded)."""
    labels = np.asarray(labels).ravel().astype(np.int64)
    confidence = np.asarray(confidence, dtype=np.float64).ravel()
    if labels.shape != confidence.shape:
        raise ValueError(f"labels ({labels.size} voxels) and confidence ({confidence.size}) differ in size")
    counts = np.bincount(labels, minlength=num_classes)
    sums = np.bincount(labels, weights=confidence, minlength=num_classes)
    return {i: float(sums[i] / counts[i]) for i in range(1, num_classes) if counts[i] > 0}


def lowest_confidence(labels, confidence, table, count: int = DEFAULT_COUNT) -> list[StructureConfidence]:
    means = mean_confidence(labels, confidence, table.num_classes)
    counts = np.bincount(np.asarray(labels).ravel().astype(np.int64), minlength=table.num_classes)
    ranked = sorted(means.items(), key=lambda item: (item[1], item[0]))[:count]
    return [StructureConfidence(i, table.structures[i].name, mean, int(counts[i])) for i, mean in ranked]


def structure_centroid_ijk(labels: np.ndarray, index: int) -> np.ndarray | None:
    """A point to look at for a structure, in (i, j, k) voxel coordinates, or None when it is absent.

    The centroid of a curved structure (lateral ventricle, cortex) can fall outside it, where the views would
    show something else; then the structure's voxel nearest to the centroid is used instead.
    """
    kji = np.argwhere(np.asarray(labels) == index)
    if kji.size == 0:
        return None
    centroid = kji.mean(axis=0)
    nearest = np.round(centroid).astype(int)
    if labels[tuple(nearest)] != index:
        centroid = kji[np.argmin(((kji - centroid) ** 2).sum(axis=1))].astype(float)
    return centroid[::-1].copy()


def voxel_to_world(volume_node, ijk) -> np.ndarray:
    """RAS in world coordinates: the volume's IJK-to-RAS, then its parent transforms if any."""
    ras = (ijk_to_ras(volume_node) @ np.append(np.asarray(ijk, float), 1.0))[:3]
    transform_node = volume_node.GetParentTransformNode()
    if transform_node is not None:
        import vtk

        to_world = vtk.vtkGeneralTransform()
        transform_node.GetTransformToWorld(to_world)
        ras = np.array(to_world.TransformPoint(*ras))
    return ras


def segment_view_point(segmentation_node, segment_id, reference_volume) -> np.ndarray | None:
    """World position to centre the views on for one segment (as edited now), or None if it is empty/gone."""
    from .segmentation_io import segment_mask

    if segmentation_node.GetSegmentation().GetSegment(segment_id) is None:
        return None
    ijk = structure_centroid_ijk(segment_mask(segmentation_node, segment_id, reference_volume), 1)
    return None if ijk is None else voxel_to_world(reference_volume, ijk)


def centre_views_on(scene, ras) -> None:
    """Centre every slice view on a world position (each keeps its orientation)."""
    import slicer

    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, float(ras[0]), float(ras[1]), float(ras[2]),
                                          slicer.vtkMRMLSliceNode.CenteredJumpSlice)
