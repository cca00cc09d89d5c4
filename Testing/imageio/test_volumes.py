"""Reading every supported format to the same LPS geometry, and a clear error for each kind of bad input."""
import os

import nibabel
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import phantom, rotation
from SegLossBrainLib.imageio.volumes import InputError, check_image, read_image, same_grid, write_image


@pytest.fixture
def oblique_image():
    image, _ = phantom(size=(40, 36, 30), spacing=(1.2, 0.9, 2.5), direction=rotation(10, -15, 30))
    return image


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_formats_round_trip_geometry_and_values(tmp_path, oblique_image, suffix):
    path = write_image(oblique_image, tmp_path / f"image{suffix}")
    back = read_image(path)
    assert same_grid(back, oblique_image)
    assert np.allclose(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(oblique_image))


def test_freesurfer_mgz_ras_affine_becomes_lps(tmp_path, oblique_image):
    # Write the same volume with nibabel (RAS affine, [i, j, k] array) and read it back through our reader.
    array_kji = sitk.GetArrayFromImage(oblique_image)
    direction = np.asarray(oblique_image.GetDirection()).reshape(3, 3)
    lps_affine = np.eye(4)
    lps_affine[:3, :3] = direction @ np.diag(oblique_image.GetSpacing())
    lps_affine[:3, 3] = oblique_image.GetOrigin()
    ras_affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps_affine
    nibabel.save(nibabel.MGHImage(np.transpose(array_kji, (2, 1, 0)), ras_affine), tmp_path / "t1.mgz")
    back = read_image(tmp_path / "t1.mgz")
    assert same_grid(back, oblique_image)
    assert np.allclose(sitk.GetArrayFromImage(back), array_kji)


def test_dicom_series_folder(tmp_path, oblique_image):
    image = sitk.Cast(sitk.RescaleIntensity(oblique_image, 0, 1000), sitk.sitkInt16)
    series = tmp_path / "dicom"
    series.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetSize()[2]):
        slice_image = image[:, :, k]
        slice_image.SetMetaData("0020|0013", str(k + 1))  # instance number
        slice_image.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1.1")  # series instance UID
        slice_image.SetMetaData("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, k)))))
        slice_image.SetMetaData("0020|0037", "\\".join(map(str, image.GetDirection()[0::3] + image.GetDirection()[1::3])))
        slice_image.SetMetaData("0008|0060", "MR")
        writer.SetFileName(str(series / f"{k:03d}.dcm"))
        writer.Execute(slice_image)
    back = read_image(series)
    assert back.GetSize() == image.GetSize()
    assert np.allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-3)
    assert np.allclose(back.GetDirection(), image.GetDirection(), atol=1e-4)
    assert np.allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-3)


def make(array, spacing=(1.0, 1.0, 1.0), vector=False):
    image = sitk.GetImageFromArray(array, isVector=vector)
    image.SetSpacing(spacing[: image.GetDimension()])
    return image


@pytest.mark.parametrize("image,message", [
    (make(np.random.rand(100, 100).astype(np.float32), (1.0, 1.0)), "2D"),
    (make(np.random.rand(4, 80, 80, 80).astype(np.float32), (1.0, 1.0, 1.0, 1.0)), "4D"),
    (make(np.random.rand(80, 80, 80, 3).astype(np.float32), vector=True), "components"),
    (make(np.zeros((80, 80, 80), np.float32)), "constant"),
    (make(np.full((80, 80, 80), 7, np.int16)), "constant"),
    (make(np.where(np.random.rand(80, 80, 80) > 0.99, np.nan, 1.0).astype(np.float32)), "NaN"),
    (make(np.where(np.random.rand(80, 80, 80) > 0.99, np.inf, 1.0).astype(np.float32)), "NaN or infinite"),
    (make(np.random.rand(80, 80, 80).astype(np.float32), (25.0, 1.0, 1.0)), "above 20 mm"),
    (make(np.random.rand(20, 20, 20).astype(np.float32)), "too small to hold a brain"),
    (make(np.random.rand(1, 200, 200).astype(np.float32)), "single slice"),
])
def test_bad_images_are_refused_with_a_clear_message(image, message):
    with pytest.raises(InputError, match=message):
        check_image(image)


def test_zero_spacing_is_refused():
    image = make(np.random.rand(80, 80, 80).astype(np.float32))
    # SimpleITK refuses to set a zero spacing, so a header with one is simulated through NIfTI pixdim.
    assert image.GetSpacing()[0] > 0
    with pytest.raises(InputError, match="zero or invalid voxel spacing"):
        check_image(type("Fake", (), {  # minimal stand-in exposing the same accessors
            "GetNumberOfComponentsPerPixel": lambda self: 1, "GetDimension": lambda self: 3,
            "GetSize": lambda self: (80, 80, 80), "GetSpacing": lambda self: (0.0, 1.0, 1.0)})())


def test_unreadable_and_missing_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "absent.nii.gz")
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(InputError, match="cannot read this file as a volume"):
        read_image(junk)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no DICOM series"):
        read_image(empty)


def test_write_is_atomic_and_refuses_unwritable_folders(tmp_path, oblique_image):
    with pytest.raises(InputError, match="does not exist"):
        write_image(oblique_image, tmp_path / "missing" / "out.nii.gz")
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user that can write anywhere (root)")
        with pytest.raises(InputError, match="not writable"):
            write_image(oblique_image, locked / "out.nii.gz")
    finally:
        os.chmod(locked, 0o700)
    with pytest.raises(InputError, match="unsupported output format"):
        write_image(oblique_image, tmp_path / "out.png")
    write_image(oblique_image, tmp_path / "out.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["out.nii.gz"]  # no temporary left
