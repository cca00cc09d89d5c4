"""Which files ``batch`` takes as cases: a folder search leaves out label maps and masks by their content (a
FreeSurfer subject's aseg, a brain mask), listing them; one named directly gets an error row; --force takes them;
a .csv list's case_id names a DICOM series folder's case too."""
import csv

import numpy as np
import SimpleITK as sitk

from conftest import brain_image, phantom, phantom_brain, write_dicom_series
from SegLossBrainLib.cli import main
from SegLossBrainLib.imageio.discovery import discover_cases
from SegLossBrainLib.imageio.volumes import write_image


def table(folder):
    with open(folder / "volumes.csv", newline="") as handle:
        return {row["case_id"]: row for row in csv.DictReader(handle)}


def freesurfer_subject(root):
    """A subject folder as FreeSurfer-style tools leave it: the scan, its aseg and its brain mask."""
    root.mkdir(parents=True)
    image, _ = phantom(size=(50, 48, 36), spacing=(1.6, 1.7, 2.5))
    write_image(image, root / "T1.nii.gz")
    labels, _ = phantom_brain(size=(60, 56, 44))
    aseg = sitk.GetArrayFromImage(labels).astype(np.int32)
    aseg[aseg == 1], aseg[aseg == 2] = 2, 3
    aseg_image = sitk.GetImageFromArray(aseg)
    aseg_image.CopyInformation(labels)
    write_image(aseg_image, root / "T1_aseg.nii.gz")
    write_image(sitk.Cast(labels > 0, sitk.sitkUInt8), root / "T1_brainmask.nii.gz")
    return root


def test_a_folder_search_leaves_out_label_maps_and_masks_and_lists_them(tmp_path, random_model_file, capsys):
    subject = freesurfer_subject(tmp_path / "sub-01")
    out = tmp_path / "out"
    main(["batch", str(subject), "--output-dir", str(out), "--model", str(random_model_file), "--device", "cpu"])
    err = capsys.readouterr().err
    assert set(table(out)) == {"T1"}
    assert "left out 2 file(s) whose content looks like a label map or mask" in err
    assert str(subject / "T1_aseg.nii.gz") in err and str(subject / "T1_brainmask.nii.gz") in err
    # Named directly, a label map is a case whose error row says what it looks like.
    main(["batch", str(subject / "T1_aseg.nii.gz"), "--output-dir", str(tmp_path / "direct"), "--model",
          str(random_model_file), "--device", "cpu"])
    row = table(tmp_path / "direct")["T1_aseg"]
    assert row["status"] == "error" and "looks like a segmentation" in row["reason"]
    # --force: every file is a case.
    main(["batch", str(subject), "--output-dir", str(tmp_path / "forced"), "--model", str(random_model_file),
          "--device", "cpu", "--force"])
    assert set(table(tmp_path / "forced")) == {"T1", "T1_aseg", "T1_brainmask"}


def test_a_csv_case_id_names_a_dicom_series_folder(tmp_path):
    labels, _ = phantom_brain(size=(60, 56, 40))
    write_dicom_series(brain_image(labels), tmp_path / "scans" / "dcm")
    listing = tmp_path / "cases.csv"
    listing.write_text("case_id,path\nadni_dcm,scans/dcm\n")
    cases = discover_cases([listing])
    assert [(c.case_id, c.path.name) for c in cases] == [("adni_dcm", "dcm")]
