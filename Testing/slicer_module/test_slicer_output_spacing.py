"""Slicer's "Output spacing" against the real MRML core (slicer-core): the segmentation's reference geometry, the
confidence volume and the volumes are on the isotropic grid covering an oblique, anisotropic input (expected grid
computed here from the input's corners, not by the engine's formula); bad spacings refused before anything runs."""
import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")
pytest.importorskip("SimpleITK")

from SegLossBrainSlicer.cli_protocol import SegmentOptions, segment_arguments  # noqa: E402
from SegLossBrainSlicer.input_checks import InputProblem  # noqa: E402
from SegLossBrainSlicer.segment_run import SegmentRun  # noqa: E402
from SegLossBrainSlicer.segmentation_io import segmentation_to_labels  # noqa: E402
from SegLossBrainSlicer.volume_files import ijk_to_ras, image_from_array, set_ijk_to_ras  # noqa: E402
from SegLossBrainSlicer.volume_table import read_volumes_table  # noqa: E402
from test_slicer_mrml import oblique_matrix  # noqa: E402
from test_slicer_panel import env, run_until_idle  # noqa: E402,F401  (env: a fixture)
from test_slicer_runner import fake_cli, make_scene_with_volume  # noqa: E402,F401  (fake_cli: a fixture)

SHAPE_KJI = (26, 60, 80)  # 80 x 60 voxels of 0.8 x 1.1 mm in plane, 26 slices of 2.5 mm: a 64 x 66 x 65 mm box
SPACING = (0.8, 1.1, 2.5)
GRID_1MM = (64, 66, 65)  # voxels of 1 mm covering that box (i, j, k)


def oblique_scene():
    scene, volume, _ = make_scene_with_volume(shape=SHAPE_KJI)
    values = np.linspace(0, 1, int(np.prod(SHAPE_KJI)), dtype=np.float32).reshape(SHAPE_KJI)
    volume.SetAndObserveImageData(image_from_array(values))
    set_ijk_to_ras(volume, oblique_matrix(SPACING))
    return scene, volume


def expected_grid(volume, new_dims=GRID_1MM, spacing=1.0):
    """IJK-to-RAS of the grid the option promises: the input's axes, ``spacing`` mm voxels (``new_dims`` of them,
    counted by hand to cover the input's extent), centred on the input's field of view."""
    matrix = ijk_to_ras(volume)
    dims = np.array(volume.GetImageData().GetDimensions())
    centre = (matrix @ np.append((dims - 1) / 2, 1))[:3]
    grid = np.eye(4)
    grid[:3, :3] = matrix[:3, :3] / np.array(SPACING) * spacing
    grid[:3, 3] = centre - grid[:3, :3] @ ((np.array(new_dims) - 1) / 2)
    return grid


def reference_geometry(segmentation):
    """(IJK-to-RAS, dims) of the segmentation's reference image geometry, read back by Slicer's own parser."""
    text = segmentation.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    image = slicer.vtkOrientedImageData()
    assert slicer.vtkSegmentationConverter.DeserializeImageGeometry(text, image, False)
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    extent = image.GetExtent()
    assert extent[0::2] == (0, 0, 0)
    return (np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)]),
            tuple(extent[1::2][a] + 1 for a in range(3)))


def grid_volume(scene, matrix, dims):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "grid")
    node.SetAndObserveImageData(image_from_array(np.zeros(dims[::-1], np.uint8)))
    set_ijk_to_ras(node, matrix)
    return node


def test_segmentation_confidence_and_volumes_on_the_1mm_grid(fake_cli):
    scene, volume = oblique_scene()
    run = SegmentRun(scene, volume, SegmentOptions(device="cpu", confidence=True, output_spacing=1.0),
                     command_prefix=fake_cli("ok"))
    result = run.run_blocking(30)
    expected, dims = expected_grid(volume), GRID_1MM
    matrix, found_dims = reference_geometry(result.segmentation)
    assert found_dims == dims
    assert np.allclose(matrix, expected, atol=1e-4)  # origin, 1 mm spacing and the input's (oblique) direction
    assert not np.allclose(matrix, ijk_to_ras(volume), atol=1e-2)
    assert np.allclose(ijk_to_ras(result.confidence_volume), expected, atol=1e-4)
    assert result.confidence_volume.GetImageData().GetDimensions() == dims
    # The segmentation still follows the input (source volume), and its volumes count 1 mm^3 voxels.
    segmentation = result.segmentation
    assert segmentation.GetNodeReferenceID(segmentation.GetReferenceImageGeometryReferenceRole()) == volume.GetID()
    labels = segmentation_to_labels(segmentation, grid_volume(scene, expected, dims))
    assert labels.shape == dims[::-1] and len(np.unique(labels)) > 10
    volumes = read_volumes_table(result.volumes_table)
    assert volumes["thalamus"] == pytest.approx(np.count_nonzero(labels == 7) / 1000.0, abs=1e-4)
    assert sum(volumes.values()) == pytest.approx(np.count_nonzero(labels) / 1000.0, abs=1e-3)


def test_zero_is_the_input_grid(fake_cli):
    scene, volume = oblique_scene()
    result = SegmentRun(scene, volume, SegmentOptions(device="cpu", output_spacing=0),
                        command_prefix=fake_cli("ok")).run_blocking(30)
    matrix, dims = reference_geometry(result.segmentation)
    assert dims == SHAPE_KJI[::-1] and np.allclose(matrix, ijk_to_ras(volume), atol=1e-4)


@pytest.mark.parametrize("spacing, reason", [(-1.0, "outside 0.25-10 mm"), (0.1, "outside 0.25-10 mm"),
                                             (50.0, "outside 0.25-10 mm"), (float("nan"), "outside 0.25-10 mm")])
def test_bad_output_spacing_is_refused_before_anything_runs(spacing, reason):
    scene, volume = oblique_scene()
    before = scene.GetNumberOfNodes()
    with pytest.raises(InputProblem, match=f"Output spacing: .*{reason}.*0 \\(input grid\\)"):
        SegmentRun(scene, volume, SegmentOptions(device="cpu", output_spacing=spacing), command_prefix=["false"])
    assert scene.GetNumberOfNodes() == before


def test_a_spacing_giving_too_many_voxels_is_refused():
    scene, volume, _ = make_scene_with_volume(shape=(100, 100, 100))
    set_ijk_to_ras(volume, np.diag([2.1, 2.1, 2.1, 1.0]))  # 210 mm a side: 840^3 = 593 M voxels of 0.25 mm
    with pytest.raises(InputProblem, match="M voxels .* choose a larger spacing"):
        SegmentRun(scene, volume, SegmentOptions(device="cpu", output_spacing=0.25), command_prefix=["false"])


def test_arguments_carry_the_output_spacing():
    options = SegmentOptions(device="cuda", output_spacing=1.0)
    arguments = segment_arguments("in.nrrd", "out.nrrd", options)
    assert arguments[arguments.index("--output-spacing") + 1] == "1.0"
    assert options.on_cpu().output_spacing == 1.0  # the CPU fallback keeps the grid asked for
    assert "--output-spacing" not in segment_arguments("in.nrrd", "out.nrrd", SegmentOptions())


@pytest.mark.slow
def test_real_engine_writes_the_1mm_grid_that_the_segmentation_takes(random_model_file):
    """The real engine (random weights, --force: checks the geometry, not the anatomy); ~8 s on 2 CPU cores."""
    pytest.importorskip("torch")
    import json

    scene, volume = oblique_scene()
    sha256 = json.loads(random_model_file.with_suffix(".json").read_text())["sha256"]
    options = SegmentOptions(str(random_model_file), "cpu", confidence=True, force=True, output_spacing=1.0)
    result = SegmentRun(scene, volume, options, model_sha256=sha256).run_blocking(240)
    expected, dims = expected_grid(volume), GRID_1MM
    matrix, found_dims = reference_geometry(result.segmentation)
    assert found_dims == dims and np.allclose(matrix, expected, atol=1e-4)
    assert np.allclose(ijk_to_ras(result.confidence_volume), expected, atol=1e-4)


def test_panel_passes_the_spacing_and_refuses_a_bad_one(env):
    """The panel (stand-in Qt, real scene): a negative spacing disables Segment with the reason; 1 mm gives a
    segmentation on the 1 mm grid of the input."""
    env.parameters.outputSpacing = -1.0
    env.panel.update_state()
    assert not env.ui.applyButton.enabled and "Output spacing: output spacing -1 mm" in env.ui.applyButton.toolTip
    env.parameters.outputSpacing = 1.0
    env.panel.update_state()
    assert env.ui.applyButton.enabled
    env.ui.applyButton.clicked.emit()
    run_until_idle(env)
    assert env.errors == []
    matrix, dims = reference_geometry(env.parameters.outputSegmentation)
    # make_scene_with_volume: 14 x 13 x 12 voxels of 0.9 x 1.1 x 1.2 mm (12.6 x 14.3 x 14.4 mm) -> 13 x 15 x 15
    assert dims == (13, 15, 15) and np.allclose(np.linalg.norm(matrix[:3, :3], axis=0), 1.0)
