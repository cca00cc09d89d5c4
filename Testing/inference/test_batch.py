"""``seglossbrain batch`` and ``segment_many``: one labelmap per case on its own grid, one volumes table with the
intracranial volume, bad cases recorded, resume, --overwrite, outputs never replaced silently, --shard and
torchrun splitting merged into one table."""
import csv
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import ROOT, phantom, rotation
from SegLossBrainLib.cli import main
from SegLossBrainLib.imageio.volumes import write_image
from SegLossBrainLib.inference.cohort import Worker, segment_many, worker_from_environment
from SegLossBrainLib.labels import load_label_table


@pytest.fixture
def cohort(tmp_path):
    """Two usable oblique, anisotropic heads in sub-folders, one with NaN voxels, one unreadable file."""
    root = tmp_path / "in"
    for number, (direction, spacing) in enumerate([(rotation(0, 8, -12), (1.6, 1.7, 2.5)),
                                                   (rotation(20, -5, 3), (2.0, 1.5, 1.8))], start=1):
        (root / f"sub-{number}").mkdir(parents=True)
        image, _ = phantom(size=(50, 48, 36), spacing=spacing, direction=direction)
        write_image(image, root / f"sub-{number}" / "T1.nii.gz")
    bad, _ = phantom(size=(50, 48, 36), spacing=(1.6, 1.7, 2.5))
    array = sitk.GetArrayFromImage(bad)
    array[3, 4, 5] = np.nan
    nan_image = sitk.GetImageFromArray(array)
    nan_image.CopyInformation(bad)
    write_image(nan_image, root / "nan.nrrd")  # SimpleITK reads a NIfTI file's NaN voxels as 0
    (root / "broken.nii.gz").write_bytes(b"not a volume")
    return root


def table(folder):
    with open(folder / "volumes.csv", newline="") as handle:
        return {row["case_id"]: row for row in csv.DictReader(handle)}


def batch(*args, model, force=True):
    # --force: a network with random weights finds no brain, which is otherwise each case's error
    return main(["batch", *map(str, args), "--model", str(model), "--device", "cpu"] + (["--force"] if force else []))


def test_one_labelmap_per_case_on_its_grid_and_one_table(tmp_path, cohort, random_model_file, capsys):
    out = tmp_path / "out"
    assert batch(cohort, "--output-dir", out, "--confidence", model=random_model_file) == 1  # two cases failed
    rows = table(out)
    assert {k: r["status"] for k, r in rows.items()} == {"sub-1_T1": "ok", "sub-2_T1": "ok", "nan": "error",
                                                         "broken": "error"}
    assert "NaN" in rows["nan"]["reason"] and "cannot read" in rows["broken"]["reason"]
    sha = hashlib.sha256(random_model_file.read_bytes()).hexdigest()
    structures = [s for s in load_label_table().structures if s.index > 0]
    for case in ("sub-1_T1", "sub-2_T1"):
        row, image = rows[case], sitk.ReadImage(str(cohort / case.replace("_T1", "") / "T1.nii.gz"))
        labels = sitk.ReadImage(str(out / row["labels"]))
        assert row["labels"] == f"{case}_labels.nii.gz" and row["model_sha256"] == sha
        assert row["model"] == "random" and float(row["seconds"]) > 0
        assert labels.GetSize() == image.GetSize()
        assert np.allclose(labels.GetSpacing(), image.GetSpacing())
        assert np.allclose(labels.GetOrigin(), image.GetOrigin(), atol=1e-4)
        assert np.allclose(labels.GetDirection(), image.GetDirection(), atol=1e-6)
        array = sitk.GetArrayFromImage(labels)
        voxel_ml = np.prod(image.GetSpacing()) / 1000
        for s in structures:
            column = s.name.replace(" ", "_").replace("-", "_") + "_ml"
            assert float(row[column]) == pytest.approx((array == s.index).sum() * voxel_ml, abs=1e-3)
        # The intracranial volume estimate is every labelled (non-background) voxel.
        assert float(row["intracranial_volume_ml"]) == pytest.approx((array > 0).sum() * voxel_ml, abs=1e-2)
        confidence = sitk.ReadImage(str(out / f"{case}_confidence.nii.gz"))
        assert confidence.GetSize() == image.GetSize()
    assert not (out / ".partial").exists() and not list(out.glob(".tmp-*"))
    assert "2 failed (broken, nan)" in capsys.readouterr().out


def test_a_case_without_a_brain_is_an_error_row_unless_forced(tmp_path, cohort, random_model_file):
    out = tmp_path / "out"
    assert batch(cohort / "sub-1", "--output-dir", out, model=random_model_file, force=False) == 1
    row = table(out)["T1"]
    assert row["status"] == "error" and "--force" in row["reason"] and not (out / "T1_labels.nii.gz").exists()
    assert batch(cohort / "sub-1", "--output-dir", out, model=random_model_file) == 0
    row = table(out)["T1"]
    assert row["status"] == "ok" and "brain" in row["qc"]  # forced: segmented, and the table says why to look


def test_rerun_skips_done_cases_overwrite_redoes_them_another_model_redoes_them(tmp_path, cohort, random_model_file,
                                                                                 capsys):
    (cohort / "nan.nrrd").unlink()
    (cohort / "broken.nii.gz").unlink()
    out = tmp_path / "out"
    assert batch(cohort, "--output-dir", out, model=random_model_file) == 0
    first = table(out)
    assert batch(cohort, "--output-dir", out, model=random_model_file) == 0
    assert table(out) == first  # nothing redone: same rows, same finish times
    assert "2 done before" in capsys.readouterr().out
    assert batch(cohort, "--output-dir", out, "--overwrite", model=random_model_file) == 0
    assert all(table(out)[c]["finished"] > first[c]["finished"] for c in first)
    import torch

    from SegLossBrainLib.models.files import save_model
    from SegLossBrainLib.networks import build_network

    torch.manual_seed(1)
    other = save_model(build_network("wong2018"), tmp_path / "other.safetensors", {"loss": {"name": "none"}})
    assert batch(cohort, "--output-dir", out, model=other) == 0
    assert {r["model"] for r in table(out).values()} == {"other"}


def test_an_existing_file_is_never_replaced_silently(tmp_path, cohort, random_model_file, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "nan_labels.nii.gz").write_bytes(b"someone else's file")
    assert batch(cohort, "--output-dir", out, model=random_model_file) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "nan_labels.nii.gz").read_bytes() == b"someone else's file" and not (out / "volumes.csv").exists()


def test_bad_inputs_and_output_folders_exit_2_and_write_nothing(tmp_path, cohort, random_model_file, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert batch(cohort, "--output-dir", blocker / "out", model=random_model_file) == 2
    assert "cannot be created or written" in capsys.readouterr().err
    assert batch(tmp_path / "missing", "--output-dir", tmp_path / "o", model=random_model_file) == 2
    assert "no such file or folder" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert batch(cohort, "--output-dir", tmp_path / "o", "--shard", "3/2", model=random_model_file) == 2
    assert "1 <= K <= N" in capsys.readouterr().err


def test_output_folder_inside_the_input_folder_is_not_read_back_as_cases(tmp_path, cohort, random_model_file):
    (cohort / "nan.nrrd").unlink()
    (cohort / "broken.nii.gz").unlink()
    assert batch(cohort, "--output-dir", cohort, "--format", "nrrd", model=random_model_file) == 0
    assert batch(cohort, "--output-dir", cohort, "--format", "nrrd", model=random_model_file) == 0
    assert sorted(table(cohort)) == ["sub-1_T1", "sub-2_T1"]


def test_interruption_keeps_the_rows_written_and_resume_finishes(tmp_path, cohort, random_model_file, monkeypatch):
    from SegLossBrainLib.inference import cohort as engine

    original, calls = engine.segment_prepared, []

    def interrupted_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    (cohort / "nan.nrrd").unlink()
    (cohort / "broken.nii.gz").unlink()
    out = tmp_path / "out"
    monkeypatch.setattr(engine, "segment_prepared", interrupted_on_second)  # the PyTorch engine's step
    assert batch(cohort, "--output-dir", out, "--engine", "torch", model=random_model_file) == 130
    rows = table(out)
    assert list(rows) == ["sub-1_T1"] and rows["sub-1_T1"]["status"] == "ok"
    assert sorted(p.name for p in out.glob("*_labels.nii.gz")) == ["sub-1_T1_labels.nii.gz"]
    monkeypatch.setattr(engine, "segment_prepared", original)
    assert batch(cohort, "--output-dir", out, model=random_model_file) == 0
    assert table(out)["sub-1_T1"] == rows["sub-1_T1"] and table(out)["sub-2_T1"]["status"] == "ok"


def test_shards_split_the_cases_and_merge_one_table(tmp_path, cohort, random_model_file, capsys):
    out = tmp_path / "out"
    assert batch(cohort, "--output-dir", out, "--shard", "1/2", model=random_model_file) == 1
    assert batch(cohort, "--output-dir", out, "--shard", "2/2", model=random_model_file) == 1
    parts = [set(table_rows) for table_rows in (csv_rows(out / f"volumes.part-{k}-of-2.csv") for k in (1, 2))]
    assert parts[0] | parts[1] == {"broken", "nan", "sub-1_T1", "sub-2_T1"} and not parts[0] & parts[1]
    assert set(table(out)) == parts[0] | parts[1]


def csv_rows(path):
    with open(path, newline="") as handle:
        return {row["case_id"]: row for row in csv.DictReader(handle)}


def test_worker_share_from_shard_and_torchrun_variables(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    worker = worker_from_environment((2, 3))  # shard 3/3, rank 1 of 2: the 6th of 6 shares
    assert (worker.index, worker.count, worker.distributed) == (5, 6, True)
    assert Worker(1, 3).take(list(range(8))) == [1, 4, 7]


def test_torchrun_two_cpu_ranks_give_the_single_process_result(tmp_path, cohort, random_model_file):
    single, split = tmp_path / "single", tmp_path / "split"
    assert batch(cohort, "--output-dir", single, model=random_model_file) == 1
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "SegLossBrainLib.cli", "batch", str(cohort), "--output-dir", str(split), "--model",
                          str(random_model_file), "--device", "cpu", "--force", "--progress-json"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert run.returncode != 0  # two cases fail, so the ranks that hold them exit 1
    # Both ranks print JSON lines to one stdout, so lines can interleave: count the events instead of parsing.
    assert run.stdout.count('"event": "cohort_start"') == 2 and run.stdout.count('"workers": 2') == 2
    rows = table(split)
    assert {k: r["status"] for k, r in rows.items()} == {k: r["status"] for k, r in table(single).items()}
    assert not list(split.glob("volumes.part-*"))  # merged by rank 0, parts removed
    for case in ("sub-1_T1", "sub-2_T1"):
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(single / f"{case}_labels.nii.gz")))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(split / f"{case}_labels.nii.gz")))
        assert np.array_equal(a, b)


def test_segment_many_yields_results_in_order_and_finds_the_structure(tmp_path, threshold_net):
    size, spacing, direction, origin = (60, 56, 40), (1.6, 1.7, 2.5), rotation(0, 8, -12), (-50.0, 40.0, -30.0)
    centre = np.asarray(origin) + direction @ (np.asarray(size) * spacing / 2) + np.array([8.0, -6.0, 5.0])
    image, truth = phantom(size=size, spacing=spacing, direction=direction, origin=origin, centre_mm=tuple(centre))
    good = write_image(image, tmp_path / "good.nrrd")
    blank = sitk.Image([40, 40, 40], sitk.sitkFloat32)
    blank.SetSpacing((2.0, 2.0, 2.0))
    flat = write_image(blank, tmp_path / "flat.nii.gz")
    results = list(segment_many([good, flat, good.parent / "good.nrrd"], model=threshold_net, device="cpu",
                                force=True))  # a sphere is not a brain
    assert [(r.case.case_id, r.status) for r in results] == [("good", "ok"), ("flat", "error")]
    labels = sitk.GetArrayFromImage(results[0].result.labels) == 1
    dice = 2 * (labels & truth).sum() / (labels.sum() + truth.sum())
    assert dice > 0.9
    assert results[0].intracranial_volume_ml == pytest.approx(labels.sum() * np.prod(image.GetSpacing()) / 1000)
    assert "constant" in results[1].reason and results[1].result is None
    assert [r.case.case_id for r in segment_many(str(good), model=threshold_net, device="cpu", force=True)] == ["good"]
