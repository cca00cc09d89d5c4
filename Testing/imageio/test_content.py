"""What a file's content says before it is segmented: a truncated or corrupt NIfTI/MGH is refused (ITK would read
the missing part as zeros), a label map or mask given as the image is refused unless --force; an MR image and an
uncompressed file named .nii.gz still pass."""
import gzip

import nibabel
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import phantom, phantom_brain
from SegLossBrainLib.cli import main
from SegLossBrainLib.imageio.content import MAX_LABEL_VALUES, check_complete, label_map_reason
from SegLossBrainLib.imageio.volumes import InputError, read_image, write_image


def head(path):
    image, _ = phantom(size=(60, 56, 40), spacing=(1.6, 1.7, 2.5))
    return write_image(image, path)


def cut(path, keep=0.6):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("name", ["t1.nii.gz", "t1.nii"])
def test_truncated_nifti_is_refused_and_nothing_is_written(tmp_path, random_model_file, capsys, name):
    source = head(tmp_path / name)
    cut(source)
    out = tmp_path / "labels.nii.gz"
    assert main(["segment", str(source), str(out), "--model", str(random_model_file), "--device", "cpu",
                 "--force"]) == 2
    err = capsys.readouterr().err
    assert "truncated" in err and str(source) in err and "copy it again" in err
    assert not out.exists() and list(tmp_path.iterdir()) == [source]


def test_truncated_mgz_is_refused(tmp_path):
    array = np.random.default_rng(0).normal(100, 20, (40, 40, 40)).astype(np.float32)
    path = tmp_path / "t1.mgz"
    nibabel.save(nibabel.MGHImage(array, np.eye(4)), str(path))
    assert read_image(path).GetSize() == (40, 40, 40)
    cut(path)
    with pytest.raises(InputError, match="truncated"):
        read_image(path)


def test_corrupt_compressed_stream_is_refused(tmp_path):
    source = head(tmp_path / "t1.nii.gz")
    data = bytearray(source.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the deflate stream: a CRC or stream error
    source.write_bytes(bytes(data))
    with pytest.raises(InputError, match="truncated or corrupt|truncated"):
        check_complete(source)


def test_whole_files_pass_an_uncompressed_nii_gz_too(tmp_path):
    source = head(tmp_path / "t1.nii.gz")
    check_complete(source)
    plain = tmp_path / "plain.nii.gz"  # ITK reads an uncompressed NIfTI named .nii.gz: so do we
    plain.write_bytes(gzip.decompress(source.read_bytes()))
    check_complete(plain)
    assert read_image(plain).GetSize() == read_image(source).GetSize()


def as_aseg(labels: sitk.Image) -> sitk.Image:
    """A phantom labelmap with FreeSurfer aseg values (left/right kept apart by the sign of x)."""
    lookup = np.zeros(20, np.int32)
    lookup[[1, 2, 14, 11, 13]] = [2, 3, 17, 14, 16]
    array = lookup[sitk.GetArrayFromImage(labels)]
    array[:, :, : array.shape[2] // 2] = np.select([array == 2, array == 3, array == 17], [41, 42, 53],
                                                   array)[:, :, : array.shape[2] // 2]
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(labels)
    return image


def test_label_maps_and_masks_look_like_segmentations_mr_images_do_not():
    labels, _ = phantom_brain()
    aseg = as_aseg(labels)
    assert "FreeSurfer aseg" in label_map_reason(aseg)
    mask = sitk.Cast(labels > 0, sitk.sitkUInt8)
    assert "binary mask" in label_map_reason(mask)
    as_float = sitk.Cast(labels, sitk.sitkFloat32)  # a label map saved as float is still one
    assert "label map" in label_map_reason(as_float)
    image, _ = phantom()
    assert label_map_reason(image) is None
    integer_image = sitk.Cast(sitk.Round(image), sitk.sitkInt16)  # an int16 MR scan: hundreds of values
    assert label_map_reason(integer_image) is None
    # The threshold: more than MAX_LABEL_VALUES distinct integers is an image.
    ramp = sitk.GetImageFromArray(np.arange(80 * 80 * 80).reshape(80, 80, 80) % (MAX_LABEL_VALUES + 1))
    assert label_map_reason(ramp) is None


def test_a_label_map_as_input_is_refused_unless_forced(tmp_path, random_model_file, capsys):
    labels, _ = phantom_brain()
    source = write_image(as_aseg(labels), tmp_path / "aseg.nii.gz")
    out = tmp_path / "labels.nii.gz"
    assert main(["segment", str(source), str(out), "--model", str(random_model_file), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "looks like a segmentation" in err and "--force" in err and not out.exists()
    assert main(["segment", str(source), str(out), "--model", str(random_model_file), "--device", "cpu",
                 "--force"]) == 0
    assert out.is_file()
