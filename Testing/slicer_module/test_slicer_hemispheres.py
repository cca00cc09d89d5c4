"""Slicer side of left/right and QC against the real MRML core (slicer-core): "Left hippocampus" etc. as coded
segments (SNOMED CT laterality) on the input's geometry, merged again on export; the volumes table's left, right,
asymmetry and QC columns; the engine's QC flags and warnings reaching the result; the command-line arguments."""
import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from SegLossBrainLib.labels import load_label_table  # noqa: E402
from SegLossBrainSlicer import cli_protocol, segmentation_io, volume_table  # noqa: E402
from test_slicer_mrml import add_volume, make_scene  # noqa: E402

TABLE = load_label_table()


def sided_labels(shape=(9, 10, 11)):
    """FreeSurfer values: left hippocampus (17) in the first columns, right (53) in the last, brainstem (16) between."""
    labels = np.zeros(shape, np.uint8)
    labels[:, :, :3] = 17
    labels[:, :, -2:] = 53
    labels[:, :2, 5] = 16
    return labels


def test_left_and_right_segments_with_laterality_codes_and_merged_export():
    scene = make_scene()
    volume = add_volume(scene)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    labels = sided_labels()
    segmentation_io.labels_to_segmentation(labels, volume, segmentation, TABLE, hemispheres=True)
    segments = segmentation.GetSegmentation()
    assert segments.GetNumberOfSegments() == 33  # 14 paired structures x 2 + 5 unpaired
    names = {segments.GetNthSegment(n).GetName(): segments.GetNthSegmentID(n)
             for n in range(segments.GetNumberOfSegments())}
    tag = slicer.vtkSegment.GetTerminologyEntryTagName()
    left = segments.GetSegment(names["Left hippocampus"])
    right = segments.GetSegment(names["Right hippocampus"])
    for segment, code in ((left, "SCT^7771000^Left"), (right, "SCT^24028007^Right")):
        value = vtk.reference("")
        assert segment.GetTag(tag, value) and code in str(value) and "SCT^5366008^Hippocampus" in str(value)
    # Each side's voxels are where the label map put them, on the input's (oblique, anisotropic) grid.
    assert np.array_equal(segmentation_io.segment_mask(segmentation, names["Left hippocampus"], volume), labels == 17)
    assert np.array_equal(segmentation_io.segment_mask(segmentation, names["brainstem"], volume), labels == 16)
    assert segmentation_io.structure_segment_ids(segmentation, 14) == [names["Left hippocampus"],
                                                                       names["Right hippocampus"]]
    # Export gives the merged structures (what fine-tuning reads): both hippocampi are structure 14.
    exported = segmentation_io.segmentation_to_labels(segmentation, volume, TABLE)
    assert np.array_equal(exported, TABLE.map_freesurfer(labels))


def test_refuses_label_values_outside_the_table():
    scene = make_scene()
    volume = add_volume(scene)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    labels = sided_labels()
    labels[0, 0, 0] = 99
    with pytest.raises(ValueError, match="99"):
        segmentation_io.labels_to_segmentation(labels, volume, segmentation, TABLE, hemispheres=True)


def test_volumes_table_with_sides_asymmetry_and_qc():
    scene = make_scene()
    labels = sided_labels()
    merged = TABLE.map_freesurfer(labels)
    rows = volume_table.structure_volumes(merged, 2.0, TABLE)  # 2 mm^3 voxels
    sides = volume_table.side_volumes(labels, 2.0, TABLE)
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", "volumes")
    volume_table.fill_volumes_table(node, rows, None, sides, {"hippocampus": "volume 9 % of ICV"})
    table = node.GetTable()
    row = [r.name for r in rows].index("hippocampus")
    left_ml, right_ml = (labels == 17).sum() * 2 / 1000, (labels == 53).sum() * 2 / 1000
    assert table.GetColumnByName("Left_mL").GetValue(row) == pytest.approx(left_ml)
    assert table.GetColumnByName("Right_mL").GetValue(row) == pytest.approx(right_ml)
    assert table.GetColumnByName("Asymmetry_index").GetValue(row) == pytest.approx(
        (left_ml - right_ml) / ((left_ml + right_ml) / 2), abs=1e-4)
    assert table.GetColumnByName("QC").GetValue(row) == "volume 9 % of ICV"
    assert table.GetColumnByName("QC").GetValue(0) == ""


def test_arguments_carry_hemispheres_and_force():
    options = cli_protocol.SegmentOptions(device="cuda", hemispheres=True, force=True)
    arguments = cli_protocol.segment_arguments("in.nrrd", "out.nrrd", options)
    assert "--hemispheres" in arguments and "--force" in arguments
    assert options.on_cpu() == cli_protocol.SegmentOptions(device="cpu", hemispheres=True, force=True)
    assert "--hemispheres" not in cli_protocol.segment_arguments("in.nrrd", "out.nrrd", cli_protocol.SegmentOptions())
