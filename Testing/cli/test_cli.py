"""The seglossbrain command: outputs on the input grid, JSON progress, and bad input -> exit 2, no output."""
import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import ROOT, phantom, rotation
from SegLossBrainLib.cli import main
from SegLossBrainLib.imageio.volumes import write_image


@pytest.fixture
def input_file(tmp_path):
    image, _ = phantom(size=(60, 56, 40), spacing=(1.6, 1.7, 2.5), direction=rotation(0, 8, -12))
    return write_image(image, tmp_path / "t1.nrrd")


def test_segment_writes_labels_volumes_and_confidence_on_the_input_grid(tmp_path, input_file, random_model_file,
                                                                       capsys):
    out = tmp_path / "labels.nii.gz"
    code = main(["segment", str(input_file), str(out), "--model", str(random_model_file), "--device", "cpu",
                 "--force", "--volumes", str(tmp_path / "v.csv"), "--confidence", str(tmp_path / "c.nii.gz"),
                 "--probabilities", str(tmp_path / "p.nii.gz")])
    assert code == 0
    image, labels = sitk.ReadImage(str(input_file)), sitk.ReadImage(str(out))
    assert labels.GetSize() == image.GetSize()
    assert np.allclose(labels.GetSpacing(), image.GetSpacing())
    assert np.allclose(labels.GetOrigin(), image.GetOrigin(), atol=1e-4)
    assert np.allclose(labels.GetDirection(), image.GetDirection(), atol=1e-6)
    array = sitk.GetArrayFromImage(labels)
    assert array.min() >= 0 and array.max() <= 19
    rows = {r["structure"]: float(r["volume_ml"]) for r in csv.DictReader(open(tmp_path / "v.csv"))}
    voxel_ml = np.prod(image.GetSpacing()) / 1000
    assert rows["thalamus"] == pytest.approx((array == 7).sum() * voxel_ml, abs=1e-3)
    confidence = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "c.nii.gz")))
    assert confidence.shape == array.shape and 0 <= confidence.min() and confidence.max() <= 1.0001
    probabilities = sitk.ReadImage(str(tmp_path / "p.nii.gz"))
    assert probabilities.GetNumberOfComponentsPerPixel() == 20
    assert "labels written" in capsys.readouterr().out


def test_progress_json_lines(tmp_path, input_file, random_model_file, capsys):
    code = main(["segment", str(input_file), str(tmp_path / "l.nrrd"), "--model", str(random_model_file),
                 "--device", "cpu", "--progress-json", "--force"])
    assert code == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert events[-1]["event"] == "result" and set(events[-1]["volumes_ml"]) >= {"thalamus", "optic chiasm"}


def run_failing(args, capsys):
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2
    return err


def test_bad_input_exits_2_and_writes_nothing(tmp_path, random_model_file, capsys):
    flat = sitk.GetImageFromArray(np.zeros((80, 80, 80), np.float32))
    path = write_image(flat, tmp_path / "flat.nii.gz")
    out = tmp_path / "out.nii.gz"
    err = run_failing(["segment", str(path), str(out), "--model", str(random_model_file)], capsys)
    assert "constant" in err and not out.exists()
    err = run_failing(["segment", str(tmp_path / "missing.nii.gz"), str(out), "--model", str(random_model_file)],
                      capsys)
    assert "no such file" in err and not out.exists()


def test_unwritable_or_missing_output_folder(tmp_path, input_file, random_model_file, capsys):
    err = run_failing(["segment", str(input_file), str(tmp_path / "nope" / "o.nii.gz"), "--model",
                       str(random_model_file)], capsys)
    assert "does not exist" in err


def test_tampered_model_and_no_model(tmp_path, input_file, random_model_file, capsys, monkeypatch):
    bad = tmp_path / "bad.safetensors"
    data = bytearray(random_model_file.read_bytes())
    data[-10] ^= 1
    bad.write_bytes(bytes(data))
    (tmp_path / "bad.json").write_text(random_model_file.with_suffix(".json").read_text())
    out = tmp_path / "o.nii.gz"
    err = run_failing(["segment", str(input_file), str(out), "--model", str(bad)], capsys)
    assert "checksum" in err and not out.exists()
    resources = tmp_path / "Resources"
    resources.mkdir()
    (resources / "SegLossBrainLabels.csv").write_text(
        (ROOT / "Resources" / "SegLossBrainLabels.csv").read_text())
    monkeypatch.setenv("SEGLOSSBRAIN_RESOURCES", str(resources))
    err = run_failing(["segment", str(input_file), str(out)], capsys)
    assert "no trained SegLossBrain model is installed" in err and not out.exists()


def test_info_lists_the_label_table(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "19 optic chiasm" in out and "FreeSurfer 2 41" in out


def test_seg_nrrd_opens_in_slicer_as_named_coded_segments(tmp_path, input_file, random_model_file):
    slicer = pytest.importorskip("slicer")
    from SegLossBrainLib.labels import load_label_table

    out = tmp_path / "labels.seg.nrrd"
    assert main(["segment", str(input_file), str(out), "--model", str(random_model_file), "--device", "cpu",
                 "--force"]) == 0
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(out))
    assert storage.ReadData(node) == 1
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 19
    table = load_label_table()
    putamen = segmentation.GetSegment("structure_09")
    assert putamen.GetName() == "putamen"
    assert np.allclose(np.array(putamen.GetColor()) * 255, table.structures[9].color, atol=0.01)
    import vtk

    terminology = vtk.reference("")  # GetTag fills a std::string& out-argument
    assert putamen.GetTag(putamen.GetTerminologyEntryTagName(), terminology)
    assert "SCT^89278009^Putamen" in str(terminology)
    assert putamen.GetLabelValue() == 9
    labels = sitk.ReadImage(str(out))  # still a plain labelmap for every other tool
    assert labels.GetSize() == sitk.ReadImage(str(input_file)).GetSize()
