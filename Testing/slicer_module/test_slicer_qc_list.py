"""The panel's review list (stand-in Qt, real scene, stand-in engine): the structures the engine's QC flags head it,
and a click centres the slice views on a voxel of that structure, on the input's grid or on the 1 mm grid of an
output spacing, with the input under a transform."""
import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")
pytest.importorskip("SimpleITK")

from SegLossBrainSlicer.segmentation_io import segmentation_to_labels  # noqa: E402
from SegLossBrainSlicer.volume_files import ijk_to_ras  # noqa: E402
from test_slicer_output_spacing import grid_volume, reference_geometry  # noqa: E402
from test_slicer_panel import env, run_until_idle  # noqa: E402,F401  (env: a fixture)

THALAMUS = 7


def slice_views(scene):
    views = []
    for name in ("Red", "Yellow", "Green"):
        view = scene.AddNewNodeByClass("vtkMRMLSliceNode", name)
        view.SetLayoutName(name)
        views.append(view)
    return views


def centre_of(view):
    return np.array([view.GetSliceToRAS().GetElement(r, 3) for r in range(3)])


def run_and_click_the_first_item(env):
    views = slice_views(env.scene)
    env.state.mode = "qc"  # the stand-in engine flags the thalamus
    env.ui.applyButton.clicked.emit()
    run_until_idle(env)
    assert env.errors == []
    items = env.ui.lowConfidenceList.items
    assert items[0].label == "QC: thalamus: mean confidence 0.60" and items[0].data(256) == THALAMUS
    assert all(not item.label.startswith("QC") for item in items[1:])  # then the least confident structures
    env.ui.lowConfidenceList.itemClicked.emit(items[0])
    centres = [centre_of(view) for view in views]
    assert all(np.allclose(c, centres[0]) for c in centres)  # every view on the same point
    return centres[0]


def label_at(labels, matrix, world):
    ijk = np.linalg.solve(matrix, np.append(world, 1.0))[:3]
    i, j, k = np.round(ijk).astype(int)
    return labels[k, j, i]


def test_a_flagged_structure_heads_the_list_and_a_click_lands_in_it(env):
    point = run_and_click_the_first_item(env)
    labels = segmentation_to_labels(env.parameters.outputSegmentation, env.volume)
    assert label_at(labels, ijk_to_ras(env.volume), point) == THALAMUS


def test_on_the_1mm_grid_of_a_transformed_input_a_click_lands_in_the_structure(env):
    transform = env.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    matrix = vtk.vtkMatrix4x4()
    rotation = vtk.vtkTransform()
    rotation.RotateZ(25)
    rotation.Translate(12.0, -7.0, 4.0)
    rotation.GetMatrix(matrix)
    transform.SetMatrixTransformToParent(matrix)
    env.volume.SetAndObserveTransformNodeID(transform.GetID())
    env.parameters.outputSpacing = 1.0
    point = run_and_click_the_first_item(env)
    # Back through the transform into the volume's own frame, then onto the segmentation's 1 mm grid.
    to_parent = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    local = np.linalg.solve(to_parent, np.append(point, 1.0))[:3]
    grid, dims = reference_geometry(env.parameters.outputSegmentation)
    assert np.allclose(np.linalg.norm(grid[:3, :3], axis=0), 1.0)
    reference = grid_volume(env.scene, grid, dims)
    reference.SetAndObserveTransformNodeID(transform.GetID())  # where the segmentation is: no resampling between
    labels = segmentation_to_labels(env.parameters.outputSegmentation, reference)
    assert label_at(labels, grid, local) == THALAMUS
