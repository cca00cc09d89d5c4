"""The installed command ends with ``os._exit`` (no interpreter teardown): what it prints and writes must still be
complete, and its exit code must be main's."""
import subprocess
import sys

import numpy as np
import SimpleITK as sitk

from SegLossBrainLib.labels import load_label_table

from conftest import brain_image, phantom_brain


def _run(*argv, timeout=300):
    code = "import sys; from SegLossBrainLib.cli import console_main; sys.argv[0] = 'seglossbrain'; console_main()"
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=timeout)


def test_a_segmentation_is_written_whole_and_its_result_line_printed(tmp_path, random_model_file):
    labels, _ = phantom_brain()
    image = brain_image(labels)
    sitk.WriteImage(image, str(tmp_path / "t1.nii.gz"))
    done = _run("segment", str(tmp_path / "t1.nii.gz"), str(tmp_path / "out.nii.gz"), "--model",
                str(random_model_file), "--force", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    written = sitk.ReadImage(str(tmp_path / "out.nii.gz"))  # a truncated file would fail to read
    assert written.GetSize() == image.GetSize()
    assert np.allclose(written.GetOrigin(), image.GetOrigin())
    # the volume table reached the pipe whole: its last row is the label table's last structure
    assert load_label_table().names[-1] in done.stdout.strip().splitlines()[-1]


def test_a_refused_input_exits_2_with_its_message(tmp_path):
    done = _run("segment", str(tmp_path / "missing.nii.gz"), str(tmp_path / "out.nii.gz"))
    assert done.returncode == 2
    assert "missing.nii.gz" in done.stderr and not (tmp_path / "out.nii.gz").exists()
