"""--dicom-seg: a DICOM Segmentation object for a DICOM series input (oblique, anisotropic), read back with
highdicom and pydicom: segments, SNOMED CT codes, colours, and frames on the source series' geometry."""
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import brain_image, phantom_brain, phantom_series, rotation
from SegLossBrainLib.cli import main
from SegLossBrainLib.labels import load_label_table, output_segments

highdicom = pytest.importorskip("highdicom")
pydicom = pytest.importorskip("pydicom")


@pytest.fixture
def series(tmp_path, labels_network):
    return phantom_series(tmp_path / "series", labels_network, rotation(4, -9, 15), (1.4, 1.6, 2.2), (96, 88, 64))


def frame_geometry(dataset):
    return (np.array(dataset.ImagePositionPatient, float), np.array(dataset.ImageOrientationPatient, float),
            np.array(dataset.PixelSpacing, float))


@pytest.mark.parametrize("hemispheres", [False, True])
def test_dicom_seg_reads_back_with_codes_colours_and_source_geometry(tmp_path, series, random_model_file,
                                                                    hemispheres):
    folder, files = series
    out, labels_out = tmp_path / "seg.dcm", tmp_path / "labels.nii.gz"
    code = main(["segment", str(folder), str(labels_out), "--model", str(random_model_file), "--device", "cpu",
                 "--dicom-seg", str(out)] + (["--hemispheres"] if hemispheres else []))
    assert code == 0
    seg = highdicom.seg.segread(out)
    sources = {pydicom.dcmread(f).SOPInstanceUID: pydicom.dcmread(f) for f in files}
    assert seg.Modality == "SEG" and seg.SeriesInstanceUID not in {s.SeriesInstanceUID for s in sources.values()}
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == next(iter(sources.values())).SeriesInstanceUID
    # Segments: names, codes and colours as the label table gives them.
    expected = output_segments(load_label_table(), hemispheres)
    assert seg.number_of_segments == len(expected)
    for number, segment in enumerate(expected, start=1):
        description = seg.get_segment_description(number)
        assert description.segment_label == segment.name
        assert description.segmented_property_type.value == segment.terminology["Type"].value
        assert description.segmented_property_type.scheme_designator == "SCT"
        assert description.segmented_property_category.value == segment.terminology["Category"].value
        rgb = highdicom.color.CIELabColor.from_dicom_value(description.RecommendedDisplayCIELabValue).to_rgb()
        assert np.abs(np.array(rgb, int) - segment.color).max() <= 2
        if segment.side:
            # Nested in the type's code item (PS3.3 C.8.20.2), where viewers look for it.
            modifier = description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0]
            assert modifier.CodeValue == {"left": "7771000", "right": "24028007"}[segment.side]
    # Frames: each refers to a source slice and lies exactly where that slice lies.
    shared = seg.SharedFunctionalGroupsSequence[0]
    orientation = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    spacing = np.array(shared.PixelMeasuresSequence[0].PixelSpacing, float)
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(labels_out)))
    slice_of = {pydicom.dcmread(f).SOPInstanceUID: k for k, f in enumerate(sorted(files))}
    number_of = {segment.value: number for number, segment in enumerate(expected, start=1)}
    pixels = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    voxels = np.zeros(len(expected) + 1, int)
    for frame, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
        source_uid = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = np.array(group.PlanePositionSequence[0].ImagePositionPatient, float)
        source_position, source_orientation, source_spacing = frame_geometry(sources[source_uid])
        assert np.allclose(position, source_position, atol=1e-4)
        assert np.allclose(orientation, source_orientation, atol=1e-6) and np.allclose(spacing, source_spacing)
        number = group.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        k = slice_of[source_uid]
        expected_mask = np.vectorize(lambda v: number_of.get(int(v), 0))(written[k]) == number
        assert np.array_equal(pixels[frame].astype(bool), expected_mask)
        voxels[number] += int(pixels[frame].sum())
    counts = {number_of[v]: int(c) for v, c in zip(*np.unique(written, return_counts=True)) if v}
    assert {n: c for n, c in enumerate(voxels) if c} == counts


def test_dicom_seg_needs_a_dicom_series(tmp_path, random_model_file, capsys, labels_network):
    from SegLossBrainLib.imageio.volumes import write_image

    labels, _ = phantom_brain()
    labels_network(labels)
    source = write_image(brain_image(labels), tmp_path / "t1.nii.gz")
    out, seg = tmp_path / "labels.nii.gz", tmp_path / "seg.dcm"
    assert main(["segment", str(source), str(out), "--model", str(random_model_file), "--dicom-seg", str(seg)]) == 2
    assert "--dicom-seg needs a DICOM series folder" in capsys.readouterr().err
    assert not out.exists() and not seg.exists()


def test_dicom_seg_refuses_another_output_grid(tmp_path, series, random_model_file, capsys):
    folder, _ = series
    out, seg = tmp_path / "labels.nii.gz", tmp_path / "seg.dcm"
    assert main(["segment", str(folder), str(out), "--model", str(random_model_file), "--dicom-seg", str(seg),
                 "--output-spacing", "1"]) == 2
    assert "--output-spacing" in capsys.readouterr().err and not out.exists() and not seg.exists()
