"""Bad input to ``seglossbrain review`` is refused before anything starts: one clear sentence, exit 2, nothing
written (no pairs folder created, no file added beside the inputs)."""
from __future__ import annotations

import socket
import subprocess

import pytest
import SimpleITK as sitk
from review_helpers import review_command, review_env, small_case  # noqa: F401


def run_review(tmp_path, *args):
    before = sorted(p for p in tmp_path.rglob("*"))
    result = subprocess.run(review_command(*args, "--pairs-dir", tmp_path / "pairs"), capture_output=True, text=True,
                            env=review_env(tmp_path), timeout=300)
    assert sorted(p for p in tmp_path.rglob("*")) == before, "review wrote something on bad input"
    return result


def test_missing_scan(tmp_path):
    result = run_review(tmp_path, tmp_path / "nowhere.nii.gz", "--port", "0")
    assert result.returncode == 2
    assert "nowhere.nii.gz does not exist" in result.stderr and "results folder" in result.stderr


def test_file_that_is_not_an_image(tmp_path):
    scan = tmp_path / "notes.nii.gz"
    scan.write_text("not a volume\n")
    result = run_review(tmp_path, scan, "--port", "0")
    assert result.returncode == 2
    assert "cannot read this file as a volume" in result.stderr


def test_labels_on_another_grid(tmp_path, small_case):  # noqa: F811
    image, labels, _ = small_case
    shifted = tmp_path / "labels_other_grid.nii.gz"
    moved = sitk.ReadImage(str(labels))
    moved.SetOrigin([o + 1.5 for o in moved.GetOrigin()])  # the same size and spacing, half a voxel off
    sitk.WriteImage(moved, str(shifted))
    result = run_review(tmp_path, image, "--labels", shifted, "--port", "0")
    assert result.returncode == 2
    assert "another voxel grid" in result.stderr and "--labels" in result.stderr


def test_port_in_use(tmp_path, small_case):  # noqa: F811
    image, labels, _ = small_case
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_review(tmp_path, image, "--labels", labels, "--port", port)
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr and "--port" in result.stderr


@pytest.mark.parametrize("host", ["not-an-address"])
def test_host_must_be_an_address(tmp_path, small_case, host):  # noqa: F811
    image, labels, _ = small_case
    result = run_review(tmp_path, image, "--labels", labels, "--host", host, "--port", "0")
    assert result.returncode == 2 and "--host" in result.stderr
