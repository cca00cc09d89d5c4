"""``segment``'s outputs: every one checked before any work (format, folder, special files, the input itself, an
existing file without --overwrite), messages naming the user's path, never a temporary file; an optional output
that fails after the work keeps the labelmap and the others, exit 1 naming what was and was not written; every
result names its model (log, volumes CSV, NRRD header)."""
import csv
import errno
import json

import pytest
import SimpleITK as sitk

from conftest import phantom, rotation
from SegLossBrainLib.cli import main, segment_outputs
from SegLossBrainLib.imageio.volumes import write_image


@pytest.fixture
def input_file(tmp_path):
    image, _ = phantom(size=(60, 56, 40), spacing=(1.6, 1.7, 2.5), direction=rotation(0, 8, -12))
    return write_image(image, tmp_path / "t1.nrrd")


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if the segmentation starts: a refusal must come before any work."""
    from SegLossBrainLib.inference import segment as engine

    def segment(*args, **kwargs):
        raise AssertionError("the segmentation ran before the request was refused")

    monkeypatch.setattr(engine, "segment", segment)


def segment_args(input_file, out, model, *more):
    return ["segment", str(input_file), str(out), "--model", str(model), "--device", "cpu", "--force", *map(str, more)]


@pytest.mark.parametrize("option, name, expected", [
    ("output", "labels.png", "unsupported format '.png'"),
    ("--volumes", "volumes.txt", "unsupported format '.txt'"),
    ("--confidence", "confidence.seg.nrrd", "unsupported format '.seg.nrrd'"),
])
def test_an_unsupported_output_format_is_refused_before_any_work(tmp_path, input_file, random_model_file, capsys,
                                                                 no_work, option, name, expected):
    out = tmp_path / ("labels.nii.gz" if option != "output" else name)
    more = [] if option == "output" else [option, tmp_path / name]
    assert main(segment_args(input_file, out, random_model_file, *more)) == 2
    err = capsys.readouterr().err
    assert expected in err and str(tmp_path / name) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t1.nrrd"]


def test_an_unwritable_or_special_location_is_refused_before_any_work_naming_the_users_path(
        tmp_path, input_file, random_model_file, capsys, no_work):
    out = tmp_path / "labels.nii.gz"
    assert main(segment_args(input_file, out, random_model_file, "--volumes", "/proc/volumes.csv")) == 2
    err = capsys.readouterr().err
    assert "/proc/volumes.csv" in err and "not writable" in err and ".tmp-" not in err
    device = tmp_path / "null.nii.gz"
    device.symlink_to("/dev/null")  # renaming onto it would replace the link, writing through it the device
    assert main(segment_args(input_file, device, random_model_file)) == 2
    assert "not a regular file" in capsys.readouterr().err
    assert main(segment_args(input_file, out, random_model_file, "--volumes", tmp_path)) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(segment_args(input_file, input_file, random_model_file)) == 2
    assert "is an input" in capsys.readouterr().err
    assert main(segment_args(input_file, out, random_model_file, "--confidence", out)) == 2
    assert "both name" in capsys.readouterr().err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["null.nii.gz", "t1.nrrd"]


def test_an_existing_output_is_kept_unless_overwrite(tmp_path, input_file, random_model_file, capsys):
    out, volumes = tmp_path / "labels.nii.gz", tmp_path / "volumes.csv"
    volumes.write_text("my own table\n")
    assert main(segment_args(input_file, out, random_model_file, "--volumes", volumes)) == 2
    err = capsys.readouterr().err
    assert f"--volumes {volumes} already exists" in err and "--overwrite" in err
    assert volumes.read_text() == "my own table\n" and not out.exists()
    assert main(segment_args(input_file, out, random_model_file, "--volumes", volumes, "--overwrite")) == 0
    assert out.is_file() and volumes.read_text().startswith("structure,volume_ml")


def test_a_failed_optional_output_keeps_the_labelmap_and_says_what_was_written(tmp_path, input_file,
                                                                               random_model_file, capsys,
                                                                               monkeypatch):
    out, volumes, confidence = tmp_path / "labels.nii.gz", tmp_path / "volumes.csv", tmp_path / "conf.nii.gz"

    def full_disk(*args, **kwargs):  # the disk fills up between the check and the write
        raise OSError(errno.ENOSPC, "No space left on device", str(volumes))

    monkeypatch.setattr(segment_outputs, "open_atomic", full_disk)
    code = main(segment_args(input_file, out, random_model_file, "--volumes", volumes, "--confidence", confidence))
    err = capsys.readouterr().err
    assert code == 1
    assert out.is_file() and confidence.is_file() and not volumes.exists()
    assert f"could not write --volumes {volumes}" in err and "No space left" in err
    assert f"Written: output {out}; --confidence {confidence}" in err
    assert sitk.ReadImage(str(out)).GetSize() == sitk.ReadImage(str(input_file)).GetSize()


def test_a_write_error_names_the_users_path_not_a_temporary_file(tmp_path, input_file, random_model_file, capsys,
                                                                 monkeypatch):
    out = tmp_path / "labels.nii.gz"
    original = sitk.WriteImage

    def refuse(image, path, *args, **kwargs):  # ITK's own error text, naming the file it was given
        raise RuntimeError(f"Exception thrown in SimpleITK WriteImage: Could not create IO object for writing "
                           f"file {path}")

    monkeypatch.setattr(sitk, "WriteImage", refuse)
    code = main(segment_args(input_file, out, random_model_file))
    monkeypatch.setattr(sitk, "WriteImage", original)
    err = capsys.readouterr().err
    assert code == 1 and str(out) in err and ".tmp-" not in err


def test_every_result_names_its_model(tmp_path, input_file, random_model_file, capsys):
    out, volumes = tmp_path / "labels.seg.nrrd", tmp_path / "volumes.csv"
    assert main(segment_args(input_file, out, random_model_file, "--volumes", volumes)) == 0
    sha256 = json.loads(random_model_file.with_suffix(".json").read_text())["sha256"]
    err = capsys.readouterr().err
    assert f"model {random_model_file.stem} (file, sha256 {sha256[:12]}" in err
    rows = list(csv.DictReader(open(volumes, newline="")))
    assert rows and {(r["model"], r["model_sha256"]) for r in rows} == {(random_model_file.stem, sha256)}
    header = sitk.ImageFileReader()
    header.SetFileName(str(out))
    header.ReadImageInformation()
    assert header.GetMetaData(segment_outputs.MODEL_HEADER) == random_model_file.stem
    assert header.GetMetaData(segment_outputs.MODEL_SHA256_HEADER) == sha256
