"""Lowest-confidence structures, the point a click centres the views on, and the jump itself (slice nodes)."""

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from SegLossBrainLib.labels import load_label_table  # noqa: E402
from SegLossBrainSlicer import confidence  # noqa: E402
from SegLossBrainSlicer.volume_files import image_from_array, set_ijk_to_ras  # noqa: E402

TABLE = load_label_table()


def test_mean_and_lowest_confidence_rank_present_structures():
    labels = np.zeros((4, 5, 6), np.uint8)
    values = np.full(labels.shape, 0.99, np.float32)
    labels[0, :2] = 7  # thalamus, mean 0.6
    values[0, :2] = [[0.5] * 6, [0.7] * 6]
    labels[1, :1] = 9  # putamen, mean 0.9
    values[1, :1] = 0.9
    labels[2, 0, 0] = 14  # hippocampus, one voxel at 0.4
    values[2, 0, 0] = 0.4
    means = confidence.mean_confidence(labels, values, TABLE.num_classes)
    assert set(means) == {7, 9, 14}  # background and absent structures are not ranked
    assert means[7] == pytest.approx(0.6)
    lowest = confidence.lowest_confidence(labels, values, TABLE, count=2)
    assert [(s.name, s.voxels) for s in lowest] == [("hippocampus", 1), ("thalamus", 12)]
    assert lowest[0].mean == pytest.approx(0.4)


def test_centroid_of_a_compact_structure_is_its_mean_voxel():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2:5, 4:8, 1:3] = 9
    ijk = confidence.structure_centroid_ijk(labels, 9)
    assert np.allclose(ijk, [1.5, 5.5, 3.0])  # (i, j, k)
    assert confidence.structure_centroid_ijk(labels, 7) is None


def test_centroid_of_a_curved_structure_stays_inside_it():
    labels = np.zeros((1, 11, 11), np.uint8)
    labels[0, 1, 1:10] = 3  # a "C": its mean voxel (row 5, col ~3) lies in the hole
    labels[0, 9, 1:10] = 3
    labels[0, 1:10, 1] = 3
    ijk = confidence.structure_centroid_ijk(labels, 3)
    i, j, k = np.round(ijk).astype(int)
    assert labels[k, j, i] == 3
    assert (i, j) == (1, 5)  # the voxel of the C nearest to its centroid


def make_volume(scene):
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "brain")
    volume.SetAndObserveImageData(image_from_array(np.zeros((8, 9, 10), np.float32)))
    set_ijk_to_ras(volume, np.array([[0, 0, 2.0, -5], [-1.5, 0, 0, 10], [0, 0.5, 0, 3], [0, 0, 0, 1]]))
    return volume


def test_voxel_to_world_uses_geometry_and_parent_transform():
    scene = slicer.vtkMRMLScene()
    volume = make_volume(scene)
    assert np.allclose(confidence.voxel_to_world(volume, [1, 2, 3]), [-5 + 6, 10 - 1.5, 3 + 1])
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 100.0)
    transform.SetMatrixTransformToParent(matrix)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    assert np.allclose(confidence.voxel_to_world(volume, [1, 2, 3]), [101, 8.5, 4])


def test_centre_views_on_moves_every_slice_view_there():
    scene = slicer.vtkMRMLScene()
    views = []
    for name, orientation in (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal")):
        view = scene.AddNewNodeByClass("vtkMRMLSliceNode", name)
        view.SetLayoutName(name)
        view.SetOrientation(orientation)
        views.append(view)
    target = np.array([12.5, -30.0, 7.25])
    confidence.centre_views_on(scene, target)
    for view in views:
        slice_to_ras = view.GetSliceToRAS()
        centre = [slice_to_ras.GetElement(r, 3) for r in range(3)]
        assert np.allclose(centre, target)


def test_segment_view_point_follows_the_segment_as_edited():
    from SegLossBrainSlicer import segmentation_io

    scene = slicer.vtkMRMLScene()
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    volume = make_volume(scene)
    labels = np.zeros((8, 9, 10), np.uint8)
    labels[2:4, 3:5, 6:8] = 9  # putamen block: centre voxel (6.5, 3.5, 2.5)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation_io.labels_to_segmentation(labels, volume, segmentation, TABLE)
    putamen_id = segmentation_io.segment_id(TABLE.structures[9])
    point = confidence.segment_view_point(segmentation, putamen_id)
    assert np.allclose(point, confidence.voxel_to_world(volume, [6.5, 3.5, 2.5]))
    thalamus_id = segmentation_io.segment_id(TABLE.structures[7])
    assert confidence.segment_view_point(segmentation, thalamus_id) is None  # empty
    segmentation.GetSegmentation().RemoveSegment(putamen_id)
    assert confidence.segment_view_point(segmentation, putamen_id) is None  # deleted by the user
