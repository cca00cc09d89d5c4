"""Label map <-> segmentation node against the real MRML core (slicer-core): names, colours, terminology,
geometry (oblique, anisotropic, transformed), export, .seg.nrrd storage, volumes table, subject hierarchy."""

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from SegLossBrainLib.labels import load_label_table  # noqa: E402
from SegLossBrainSlicer import segmentation_io, subject_hierarchy, volume_table  # noqa: E402
from SegLossBrainSlicer.volume_files import array_from_image, ijk_to_ras, image_from_array, set_ijk_to_ras  # noqa: E402

TABLE = load_label_table()


def oblique_matrix(spacing=(0.8, 1.1, 2.5), origin=(-90.5, 120.25, -60.0)):
    """IJK-to-RAS with a rotation about two axes and anisotropic spacing."""
    transform = vtk.vtkTransform()
    transform.RotateX(17)
    transform.RotateZ(-31)
    rotation = np.array([[transform.GetMatrix().GetElement(r, c) for c in range(3)] for r in range(3)])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ np.diag(spacing)
    matrix[:3, 3] = origin
    return matrix


def make_scene():
    scene = slicer.vtkMRMLScene()
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    scene._test_logic = logic  # keep alive with the scene
    return scene


def add_volume(scene, shape=(9, 10, 11), matrix=None, name="T1"):
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    volume.SetAndObserveImageData(image_from_array(np.random.default_rng(0).random(shape).astype(np.float32)))
    set_ijk_to_ras(volume, oblique_matrix() if matrix is None else matrix)
    return volume


def synthetic_labels(shape=(9, 10, 11), seed=1):
    """Every structure present at least once, plus random voxels; some structure absent when asked."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, TABLE.num_classes, size=shape).astype(np.uint8)
    labels.ravel()[: TABLE.num_classes] = np.arange(TABLE.num_classes)
    return labels


def test_terminology_string_matches_slicer_colour_table():
    colour_table = slicer.vtkMRMLColorTableNode()
    storage = slicer.vtkMRMLColorTableStorageNode()
    storage.SetFileName(str(TABLE.path))
    assert storage.ReadData(colour_table)
    for structure in TABLE.structures:
        assert segmentation_io.terminology_string(structure) == colour_table.GetTerminologyAsString(structure.index)


def test_segments_named_coloured_and_coded_in_table_order():
    scene = make_scene()
    volume = add_volume(scene)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    segmentation_io.labels_to_segmentation(synthetic_labels(), volume, segmentation, TABLE)
    segments = segmentation.GetSegmentation()
    assert segments.GetNumberOfSegments() == 19
    tag = slicer.vtkSegment.GetTerminologyEntryTagName()
    for n, structure in enumerate(TABLE.structures[1:]):
        segment = segments.GetNthSegment(n)
        assert segments.GetNthSegmentID(n) == segmentation_io.segment_id(structure)
        assert segment.GetName() == structure.name
        assert np.allclose(segment.GetColor(), np.array(structure.color) / 255.0)
        value = vtk.reference("")
        assert segment.GetTag(tag, value)
        assert str(value) == segmentation_io.terminology_string(structure)
        assert segmentation_io.structure_index(segment, TABLE) == structure.index
    putamen = segments.GetSegment(segmentation_io.segment_id(TABLE.structures[TABLE.index_of("putamen")]))
    assert "SCT^89278009^Putamen" in putamen.GetTerminology()


@pytest.mark.parametrize("with_transform", [False, True])
def test_oblique_anisotropic_geometry_and_voxel_exact_export(with_transform):
    scene = make_scene()
    volume = add_volume(scene)
    if with_transform:
        transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
        matrix = vtk.vtkMatrix4x4()
        matrix.SetElement(0, 3, 12.0)
        matrix.SetElement(1, 2, 0.2)
        transform.SetMatrixTransformToParent(matrix)
        volume.SetAndObserveTransformNodeID(transform.GetID())
    labels = synthetic_labels()
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    segmentation_io.labels_to_segmentation(labels, volume, segmentation, TABLE)
    assert segmentation.GetTransformNodeID() == volume.GetTransformNodeID()

    # Our own export, values in table order.
    assert np.array_equal(segmentation_io.segmentation_to_labels(segmentation, volume, TABLE), labels)

    # Slicer's export with the input as reference keeps the input grid exactly.
    ids = vtk.vtkStringArray()
    for structure in TABLE.structures[1:]:
        ids.InsertNextValue(segmentation_io.segment_id(structure))
    exported = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "exported")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
        segmentation, ids, exported, volume, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
    assert np.allclose(ijk_to_ras(exported), ijk_to_ras(volume), atol=1e-9)
    assert np.array_equal(array_from_image(exported.GetImageData()), labels)


def test_reference_geometry_is_the_input_volume():
    scene = make_scene()
    volume = add_volume(scene)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    segmentation_io.labels_to_segmentation(synthetic_labels(), volume, segmentation, TABLE)
    geometry = slicer.vtkOrientedImageData()
    slicer.vtkSegmentationConverter.DeserializeImageGeometry(
        segmentation.GetSegmentation().GetConversionParameter(
            slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()), geometry)
    matrix = vtk.vtkMatrix4x4()
    geometry.GetImageToWorldMatrix(matrix)
    found = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    assert np.allclose(found, ijk_to_ras(volume), atol=1e-6)
    assert geometry.GetDimensions() == volume.GetImageData().GetDimensions()


def test_seg_nrrd_round_trip_keeps_names_colours_codes_and_voxels(tmp_path):
    scene = make_scene()
    volume = add_volume(scene)
    labels = synthetic_labels()
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    segmentation_io.labels_to_segmentation(labels, volume, segmentation, TABLE)
    path = str(tmp_path / "result.seg.nrrd")
    writer = slicer.vtkMRMLSegmentationStorageNode()
    writer.SetFileName(path)
    assert writer.WriteData(segmentation)

    loaded = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "loaded")
    reader = slicer.vtkMRMLSegmentationStorageNode()
    reader.SetFileName(path)
    assert reader.ReadData(loaded)
    segments = loaded.GetSegmentation()
    assert segments.GetNumberOfSegments() == 19
    for n, structure in enumerate(TABLE.structures[1:]):
        segment = segments.GetNthSegment(n)
        assert segment.GetName() == structure.name
        assert np.allclose(segment.GetColor(), np.array(structure.color) / 255.0, atol=1e-3)
        assert segment.GetTerminology() == segmentation_io.terminology_string(structure)
    assert np.array_equal(segmentation_io.segmentation_to_labels(loaded, volume, TABLE), labels)


def test_export_follows_tags_and_names_not_order():
    scene = make_scene()
    volume = add_volume(scene)
    labels = synthetic_labels()
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    segmentation_io.labels_to_segmentation(labels, volume, segmentation, TABLE)
    segments = segmentation.GetSegmentation()
    thalamus = TABLE.index_of("thalamus")
    # The user renames the thalamus, moves CSF to the top and deletes the optic chiasm.
    segments.GetSegment(segmentation_io.segment_id(TABLE.structures[thalamus])).SetName("my thalamus")
    segments.SetSegmentIndex(segmentation_io.segment_id(TABLE.structures[16]), 0)
    segments.RemoveSegment(segmentation_io.segment_id(TABLE.structures[19]))
    expected = labels.copy()
    expected[expected == 19] = 0
    assert np.array_equal(segmentation_io.segmentation_to_labels(segmentation, volume, TABLE), expected)


def test_export_refuses_segments_it_cannot_map():
    scene = make_scene()
    volume = add_volume(scene)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    segmentation_io.labels_to_segmentation(synthetic_labels(), volume, segmentation, TABLE)
    segmentation.GetSegmentation().AddEmptySegment("tumour", "tumour")
    with pytest.raises(ValueError, match="tumour"):
        segmentation_io.segmentation_to_labels(segmentation, volume, TABLE)
    # A hand-made segment named like a structure maps by its name.
    segmentation.GetSegmentation().GetSegment("tumour").SetName("Putamen")
    segmentation_io.segmentation_to_labels(segmentation, volume, TABLE)


def test_label_values_outside_the_table_are_refused():
    scene = make_scene()
    volume = add_volume(scene)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    labels = synthetic_labels()
    labels[0, 0, 0] = 42
    with pytest.raises(ValueError, match="outside"):
        segmentation_io.labels_to_segmentation(labels, volume, segmentation, TABLE)


def test_volumes_table_equals_count_times_voxel_volume():
    scene = make_scene()
    matrix = oblique_matrix(spacing=(0.9, 1.2, 3.0))
    volume = add_volume(scene, matrix=matrix)
    labels = synthetic_labels()
    labels[labels == 12] = 0  # one absent structure still gets its row, with 0 mL
    voxel_mm3 = 0.9 * 1.2 * 3.0
    rows = volume_table.structure_volumes(labels, abs(np.linalg.det(matrix[:3, :3])), TABLE)
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", "volumes")
    volume_table.fill_volumes_table(node, rows, {1: 0.5})
    found = volume_table.read_volumes_table(node)
    assert list(found) == TABLE.names[1:]
    for structure in TABLE.structures[1:]:
        expected = np.count_nonzero(labels == structure.index) * voxel_mm3 / 1000.0
        assert found[structure.name] == pytest.approx(expected, abs=1e-4)
    assert found["4th ventricle"] == 0.0
    assert node.GetColumnUnitLabel(volume_table.COLUMN_VOLUME) == "mL"
    assert node.GetTable().GetColumnByName(volume_table.COLUMN_CONFIDENCE).GetValue(0) == 0.5


def test_results_go_into_the_input_study():
    scene = make_scene()
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    volume = add_volume(scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Patient")
    study = hierarchy.CreateStudyItem(patient, "MR brain")
    series_folder = hierarchy.CreateFolderItem(study, "series")
    hierarchy.CreateItem(series_folder, volume)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", "volumes")
    subject_hierarchy.place_with_input(scene, volume, segmentation, table, None)
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(segmentation)) == study
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(table)) == study


def test_results_go_beside_a_volume_without_study():
    scene = make_scene()
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    volume = add_volume(scene)
    folder = hierarchy.CreateFolderItem(hierarchy.GetSceneItemID(), "my data")
    hierarchy.CreateItem(folder, volume)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    subject_hierarchy.place_with_input(scene, volume, segmentation)
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(segmentation)) == folder


def test_show_3d_builds_surfaces_only_on_demand():
    scene = make_scene()
    volume = add_volume(scene)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    segmentation_io.labels_to_segmentation(synthetic_labels(), volume, segmentation, TABLE)
    surface = slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()
    assert not segmentation.GetSegmentation().ContainsRepresentation(surface)
    segmentation_io.show_3d(segmentation, True)
    assert segmentation.GetSegmentation().ContainsRepresentation(surface)
    segmentation_io.show_3d(segmentation, False)
    assert not segmentation.GetSegmentation().ContainsRepresentation(surface)
    assert not segmentation.GetDisplayNode().GetVisibility3D()
