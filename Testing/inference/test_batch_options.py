"""``seglossbrain batch --hemispheres / --output-spacing / --dicom-seg``: left/right labelmaps and the table's
left, right and asymmetry columns (counted again from the files written), 1 mm labels covering each case, a DICOM
SEG beside each DICOM series case and an error row for a case that is none, bad options refused with nothing
written, and a re-run with other settings redoing the cases."""
import csv

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import TRUE_CENTRE, TRUE_FRAME, brain_image, fissure, phantom_brain, rotation, write_dicom_series
from SegLossBrainLib.cli import main
from SegLossBrainLib.imageio.volumes import write_image

DIRECTION = rotation(5, -7, 12)
SIZE, SPACING = (70, 80, 48), (2.0, 2.0, 2.8)  # 140 x 160 x 134 mm: the phantom brain and some air around it
PAIRED = {"hippocampus": (17, 53), "cerebral_cortex": (3, 42), "cerebral_white_matter": (2, 41)}


@pytest.fixture
def cohort(tmp_path, labels_network):
    """Two cases of one phantom brain (oblique, anisotropic): a NIfTI file and a DICOM series; the stand-in
    network answers with the phantom's labels."""
    truth, _ = phantom_brain(direction=DIRECTION, spacing=SPACING, size=SIZE)
    labels_network(truth)
    image = brain_image(truth)
    root = tmp_path / "in"
    root.mkdir()
    write_image(image, root / "volume.nii.gz")
    write_dicom_series(image, root / "series")
    return root, image


def table(folder):
    with open(folder / "volumes.csv", newline="") as handle:
        return {row["case_id"]: row for row in csv.DictReader(handle)}


def batch(*args, model):
    return main(["batch", *map(str, args), "--model", str(model), "--device", "cpu"])


def head_x(image):
    """Each voxel's coordinate along the phantom head's left axis, relative to its fissure (> 0: left)."""
    size = image.GetSize()
    k, j, i = np.meshgrid(*[np.arange(n) for n in reversed(size)], indexing="ij")
    matrix = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    head = (np.stack([i, j, k], -1) @ matrix.T + np.asarray(image.GetOrigin()) - TRUE_CENTRE) @ TRUE_FRAME
    return head[..., 0] - fissure(head[..., 1])


def test_hemispheres_and_1mm_labels_with_left_right_columns(tmp_path, cohort, random_model_file):
    root, image = cohort
    out = tmp_path / "out"
    assert batch(root / "volume.nii.gz", "--output-dir", out, "--hemispheres", "--output-spacing", "1",
                 "--confidence", model=random_model_file) == 0
    row = table(out)["volume"]
    assert row["status"] == "ok" and row["settings"] == "hemispheres; output_spacing 1 mm"
    labels = sitk.ReadImage(str(out / row["labels"]))
    # On the 1 mm grid covering the input: its axes, ceil(extent) voxels along each.
    assert labels.GetSize() == (140, 160, 135) and labels.GetSpacing() == pytest.approx((1.0, 1.0, 1.0))
    assert labels.GetDirection() == pytest.approx(image.GetDirection())
    confidence = sitk.ReadImage(str(out / "volume_confidence.nii.gz"))
    assert confidence.GetSize() == labels.GetSize() and confidence.GetOrigin() == pytest.approx(labels.GetOrigin())
    array = sitk.GetArrayFromImage(labels)
    assert set(np.unique(array).tolist()) == {0, 2, 41, 3, 42, 17, 53, 14, 16}  # the phantom's, as aseg values
    # Left is left: the phantom's left hippocampus lies left of its fissure.
    side = head_x(labels)
    assert (side[array == 17] > 0).mean() > 0.99 and (side[array == 53] < 0).mean() > 0.99
    for name, (left_value, right_value) in PAIRED.items():
        left, right = (array == left_value).sum() / 1000, (array == right_value).sum() / 1000  # 1 mm^3 voxels
        assert float(row[f"{name}_left_ml"]) == pytest.approx(left, abs=1e-3)
        assert float(row[f"{name}_right_ml"]) == pytest.approx(right, abs=1e-3)
        assert float(row[f"{name}_asymmetry_index"]) == pytest.approx((left - right) / ((left + right) / 2), abs=1e-4)
        assert float(row[f"{name}_ml"]) == pytest.approx(left + right, abs=2e-3)
    assert "brainstem_left_ml" not in row  # unpaired: no side columns


def test_dicom_seg_beside_each_series_case_and_an_error_row_for_a_volume_file(tmp_path, cohort, random_model_file,
                                                                                capsys):
    highdicom = pytest.importorskip("highdicom")
    pydicom = pytest.importorskip("pydicom")
    root, _ = cohort
    out = tmp_path / "out"
    assert batch(root, "--output-dir", out, "--dicom-seg", "--hemispheres", model=random_model_file) == 1
    rows = table(out)
    assert rows["series"]["status"] == "ok" and rows["volume"]["status"] == "error"
    assert "--dicom-seg needs a DICOM series folder" in rows["volume"]["reason"]
    assert not list(out.glob("volume_*"))  # nothing written for the refused case
    assert "1 failed (volume)" in capsys.readouterr().out
    seg = highdicom.seg.segread(out / "series_seg.dcm")
    source = pydicom.dcmread(sorted((root / "series").iterdir())[0])
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert seg.number_of_segments == 33  # left/right
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "series_labels.nii.gz")))
    assert labels.shape[0] == len(list((root / "series").iterdir())) and 53 in labels
    # A re-run skips the series case (same settings, its SEG there) and does not take the output folder's SEG
    # files for a series to segment.
    seg_time = (out / "series_seg.dcm").stat().st_mtime_ns
    assert batch(root, tmp_path, "--output-dir", out, "--dicom-seg", "--hemispheres", model=random_model_file) == 1
    assert set(table(out)) == {"series", "volume"} and (out / "series_seg.dcm").stat().st_mtime_ns == seg_time


def test_other_settings_redo_the_cases(tmp_path, cohort, random_model_file):
    root, _ = cohort
    out = tmp_path / "out"
    assert batch(root / "volume.nii.gz", "--output-dir", out, model=random_model_file) == 0
    assert table(out)["volume"]["settings"] == "" and "hippocampus_left_ml" not in table(out)["volume"]
    first = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "volume_labels.nii.gz")))
    assert first.max() <= 19
    assert batch(root / "volume.nii.gz", "--output-dir", out, "--hemispheres", model=random_model_file) == 0
    second = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "volume_labels.nii.gz")))
    assert 53 in second and table(out)["volume"]["settings"] == "hemispheres"
    assert float(table(out)["volume"]["hippocampus_left_ml"]) > 0


@pytest.mark.parametrize("options, message", [
    (["--output-spacing", "0"], "outside 0.25-10 mm"),
    (["--output-spacing", "50"], "outside 0.25-10 mm"),
    (["--dicom-seg", "--output-spacing", "1"], "cannot be combined with --output-spacing"),
])
def test_bad_options_exit_2_before_any_work(tmp_path, cohort, random_model_file, capsys, options, message):
    root, _ = cohort
    out = tmp_path / "out"
    assert batch(root, "--output-dir", out, *options, model=random_model_file) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_a_spacing_too_fine_for_one_case_is_that_cases_error(tmp_path, cohort, random_model_file):
    root, _ = cohort
    huge, _ = phantom_brain(direction=DIRECTION, spacing=(2.0, 2.0, 2.0), size=(105, 105, 105))
    write_image(brain_image(huge), root / "huge.nii.gz")  # 210 mm a side: 0.25 mm voxels would be 593 M
    out = tmp_path / "out"
    assert batch(root / "huge.nii.gz", "--output-dir", out, "--output-spacing", "0.25", model=random_model_file) == 1
    row = table(out)["huge"]
    assert row["status"] == "error" and "593 M voxels" in row["reason"] and "choose a larger spacing" in row["reason"]
    assert not list(out.glob("huge_*"))
