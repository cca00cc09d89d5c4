"""--output-spacing: labels and confidence on an isotropic grid covering the input (oblique, thick slices), mapped
from the same probabilities; finer than nearest-neighbour upsampling of the thick-grid labels; bad values refused."""
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import brain_image, phantom_brain, rotation
from SegLossBrainLib.cli import main
from SegLossBrainLib.evaluation.metrics import dice_per_label
from SegLossBrainLib.imageio.volumes import write_image

DIRECTION = rotation(6, -5, 11)


def corners(image):
    size = np.array(image.GetSize())
    return np.array([image.TransformContinuousIndexToPhysicalPoint([float(c) for c in (np.array(b) * size - 0.5)])
                     for b in np.ndindex(2, 2, 2)])


@pytest.fixture
def thick_scan(tmp_path, labels_network):
    truth, _ = phantom_brain(direction=DIRECTION, spacing=(1.0, 1.0, 1.0), size=(150, 160, 120))
    labels_network(truth)
    image = brain_image(truth)
    # 5 mm slices along the third axis, as a clinical axial scan: average 5 slices, keep the grid's axes.
    thick = sitk.BinShrink(image, [1, 1, 5])
    return truth, write_image(thick, tmp_path / "thick.nrrd")


def test_labels_and_confidence_on_an_isotropic_grid_covering_the_input(tmp_path, thick_scan, random_model_file):
    truth, source = thick_scan
    thick = sitk.ReadImage(str(source))
    out, confidence = tmp_path / "labels.nii.gz", tmp_path / "conf.nii.gz"
    assert main(["segment", str(source), str(out), "--model", str(random_model_file), "--device", "cpu",
                 "--output-spacing", "1", "--confidence", str(confidence)]) == 0
    labels = sitk.ReadImage(str(out))
    assert labels.GetSpacing() == pytest.approx((1.0, 1.0, 1.0))
    assert labels.GetDirection() == pytest.approx(thick.GetDirection())
    # It covers the input's field of view: same box, corner to corner, up to less than one output voxel.
    assert np.abs(np.sort(corners(labels), 0) - np.sort(corners(thick), 0)).max() < 1.0
    conf = sitk.ReadImage(str(confidence))
    assert conf.GetSize() == labels.GetSize() and conf.GetOrigin() == pytest.approx(labels.GetOrigin())
    # Finer than the thick grid's labels upsampled by nearest neighbour, measured against the 1 mm truth.
    thick_out = tmp_path / "thick_labels.nii.gz"
    assert main(["segment", str(source), str(thick_out), "--model", str(random_model_file), "--device", "cpu"]) == 0
    upsampled = sitk.Resample(sitk.ReadImage(str(thick_out)), labels, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    reference = sitk.GetArrayFromImage(sitk.Resample(truth, labels, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
    fine = dice_per_label(sitk.GetArrayFromImage(labels), reference, 20)
    coarse = dice_per_label(sitk.GetArrayFromImage(upsampled), reference, 20)
    assert fine[2] > 0.85 and fine[1] > 0.9  # cortex and white matter of the phantom
    assert fine[2] > coarse[2] + 0.03 and fine[14] > coarse[14]  # cortex, hippocampus


@pytest.mark.parametrize("value", ["0", "-1", "0.1", "50", "nan"])
def test_absurd_output_spacing_is_refused_before_any_work(tmp_path, thick_scan, random_model_file, capsys, value):
    _, source = thick_scan
    out = tmp_path / "labels.nii.gz"
    assert main(["segment", str(source), str(out), "--model", str(random_model_file),
                 "--output-spacing", value]) == 2
    assert "output spacing" in capsys.readouterr().err and not out.exists()
