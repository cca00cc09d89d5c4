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
    return _to_world(ras, volume_node.GetParentTransformNode())


def _to_world(ras, transform_node) -> np.ndarray:
    if transform_node is not None:
        import vtk

        to_world = vtk.vtkGeneralTransform()
        transform_node.GetTransformToWorld(to_world)
        ras = np.array(to_world.TransformPoint(*ras))
    return np.asarray(ras, float)


def segment_view_point(segmentation_node, segment_id) -> np.ndarray | None:
    """World position to centre the views on for one segment (as edited now), or None if it is empty/gone.

    Found on the segment's own labelmap (the segmentation's geometry, e.g. the 1 mm grid of an output spacing),
    not resampled onto the input volume, where a small structure of a finer segmentation could vanish."""
    import slicer
    import vtk

    from .volume_files import array_from_image

    image = slicer.vtkOrientedImageData()
    if (segmentation_node.GetSegmentation().GetSegment(segment_id) is None
            or not segmentation_node.GetBinaryLabelmapRepresentation(segment_id, image)
            or image.GetPointData().GetScalars() is None or min(image.GetDimensions()) < 1):
        return None
    ijk = structure_centroid_ijk(array_from_image(image), 1)
    if ijk is None:
        return None
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)  # index (from the extent's start) to the segmentation's own frame
    to_frame = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    ras = (to_frame @ np.append(ijk + np.array(image.GetExtent()[0::2]), 1.0))[:3]
    return _to_world(ras, segmentation_node.GetParentTransformNode())


def centre_views_on(scene, ras) -> None:
    """Centre every slice view on a world position (each keeps its orientation)."""
    import slicer

    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, float(ras[0]), float(ras[1]), float(ras[2]),
                                          slicer.vtkMRMLSliceNode.CenteredJumpSlice)
