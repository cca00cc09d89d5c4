"""The loss study runner on a tiny study (2 arms, 3 steps, 32^3 patches, phantom label maps): it runs, skips a
finished arm and resumes an interrupted one, refuses changed settings, and writes the report (also alone)."""
import csv
import json
import os
import signal

import numpy as np
import pytest
import SimpleITK as sitk

from SegLossBrainLib.cli import main
from SegLossBrainLib.study.runner import (StudyError, StudySettings, choose_vnet_loss, format_lr, load_manifest,
                                          parse_arms, run_id, run_study)
from SegLossBrainLib.study.report import CSV_COLUMNS, report_study

INTENSITY = {0: 0.0, 2: 0.9, 3: 0.6, 4: 0.2, 17: 0.5, 24: 0.15, 500: 0.3}


def _phantom(shift: int) -> np.ndarray:
    """48^3 nested spheres of WM, cortex, ventricle, hippocampus, CSF and scalp (as in test_training)."""
    k, j, i = np.meshgrid(*[np.arange(48)] * 3, indexing="ij")
    r = np.sqrt((k - 24 - shift) ** 2 + (j - 24) ** 2 + (i - 24) ** 2)
    labels = np.select([r < 5, r < 10, r < 15, r < 18, r < 21, r < 23], [4, 2, 3, 24, 500, 17], 0).astype(np.int16)
    labels[(r < 10) & (i > 28)] = 17
    return labels


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    (folder / "maps").mkdir()
    for index, shift in enumerate((0, 3, -2)):
        sitk.WriteImage(sitk.GetImageFromArray(_phantom(shift)), str(folder / "maps" / f"map_{index}.nii.gz"))
    labels = _phantom(1)
    image = sitk.GetImageFromArray(np.vectorize(INTENSITY.get)(labels).astype(np.float32) * 100)
    aseg = sitk.GetImageFromArray(labels)
    for volume in (image, aseg):
        volume.SetSpacing((1.5, 1.5, 1.5))  # 72 mm: big enough to pass the input checks
    sitk.WriteImage(image, str(folder / "scan.nii.gz"))
    sitk.WriteImage(aseg, str(folder / "scan_aseg.nii.gz"))
    return folder


def settings(data, **overrides):
    values = dict(steps=3, patch_size=(32, 32, 32), label_maps=[str(data / "maps" / f"map_{i}.nii.gz") for i in (0, 1)],
                  validation_maps=[str(data / "maps" / "map_2.nii.gz")],
                  real_pairs=[(str(data / "scan.nii.gz"), str(data / "scan_aseg.nii.gz"), "scan")],
                  arms=["dice", "explog"], validate_every=3, validation_size=(32, 32, 32), seed=1)
    values.update(overrides)
    return StudySettings(**values)


@pytest.fixture(scope="module")
def study(data, tmp_path_factory):
    """A study interrupted in its second arm, then run again to the end; returns (folder, events of the rerun)."""
    out = tmp_path_factory.mktemp("study")

    def interrupt(event):
        if event.get("event") == "step" and event["run"] == "explog" and event["step"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    first = run_study(out, settings(data), on_event=interrupt)
    assert first["status"] == "stopped" and first["runs"] == {"dice": "finished", "explog": "stopped"}
    dice_checkpoint = (out / "dice" / "last.pt").stat().st_mtime_ns
    events = []
    second = run_study(out, settings(data), on_event=events.append)
    assert second["status"] == "finished"
    assert (out / "dice" / "last.pt").stat().st_mtime_ns == dice_checkpoint
    return out, events


def test_rerun_skips_the_finished_arm_and_resumes_the_interrupted_one(study):
    out, events = study
    assert {"event": "run_skip", "run": "dice", "reason": "finished (3 steps)"} in events
    start = next(e for e in events if e["event"] == "run_start")
    assert start == {"event": "run_start", "run": "explog", "from_step": 1, "steps": 3}
    log = [json.loads(line) for line in open(out / "explog" / "log.jsonl")]
    assert [r["step"] for r in log] == [1, 2, 3] and "validation" in log[-1]
    manifest = load_manifest(out)
    assert {r: v["status"] for r, v in manifest["runs"].items()} == {"dice": "finished", "explog": "finished"}
    assert manifest["runs"]["explog"]["loss_params"] == {"gamma_dice": 0.3, "gamma_cross": 0.3}
    assert (out / "explog" / "best.safetensors").is_file()


def test_refuses_changed_settings(study, data):
    out, _ = study
    with pytest.raises(StudyError, match=r"steps: recorded 3, now 4.*new --out folder"):
        run_study(out, settings(data, steps=4))
    assert main(["study", "--out", str(out), "--learning-rates", "1e-4", "--device", "cpu"]) == 2


def test_report_columns_and_structure_order(study, data):
    out, _ = study
    manifest = load_manifest(out)
    report = report_study(out, settings(data), manifest)
    assert any("SHRUNKEN SETTING" in line for line in report["note"])
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert {(r["arm"], r["set"], r["case"]) for r in rows} == {
        (arm, s, case) for arm in ("dice", "explog") for s, case in (("real", "scan"), ("synthetic", "map_2.nii.gz"))}
    shares = manifest["structure_share"]
    ranks = {r["structure"]: int(r["size_rank"]) for r in rows}
    assert [shares[n] for n in sorted(ranks, key=ranks.get)] == sorted(shares.values(), reverse=True)
    text = (out / "results.md").read_text()
    assert "3 steps per run, patch 32x32x32" in text
    section = text.split("## Dice per structure, real dev scans")[1].split("**mean of the 17**")[0]
    table = [line.split("|") for line in section.splitlines() if line.startswith("| ") and "share %" not in line and line.count("|") > 3]
    assert len(table) == 17
    listed = [float(cells[2]) for cells in table]
    assert listed == sorted(listed, reverse=True)  # largest first, smallest last
    assert "apart: " in text and (out / "validation_curves.png").stat().st_size > 0
    assert (out / "structure_dice.png").stat().st_size > 0


def test_report_only_on_an_existing_folder(study, data, tmp_path):
    out, _ = study
    for name in ("results.csv", "results.md", "validation_curves.png"):
        (out / name).unlink(missing_ok=True)
    assert main(["study", "--out", str(out), "--report-only", "--device", "cpu", "--data", str(data)]) == 0
    assert (out / "results.md").is_file() and (out / "results.csv").is_file()
    assert (out / "validation_curves.png").is_file()
    assert main(["study", "--out", str(tmp_path / "none"), "--report-only"]) == 2
    assert main(["study", "--out", str(tmp_path / "new"), "--steps", "3", "--data", str(tmp_path)]) == 2


def test_vnet_takes_the_best_wong_arm(study, data):
    out, _ = study
    arm, scores = choose_vnet_loss(out, settings(data))
    assert set(scores) == {"dice", "explog"} and scores[arm] == max(scores.values())


def test_arm_names_and_run_ids(data):
    assert parse_arms("vnet,wce,dice") == ["dice", "wce", "vnet"]
    assert parse_arms(None)[-1] == "vnet" and len(parse_arms(None)) == 8
    for bad, message in (("vnet", "at least one Wong arm"), ("dice,focalx", "unknown arm")):
        with pytest.raises(StudyError, match=message):
            parse_arms(bad)
    two = settings(data, learning_rates=[1e-3, 1e-4])
    assert [run_id("gdl", lr, two) for lr in two.learning_rates] == ["gdl_lr1e-3", "gdl_lr1e-4"]
    assert run_id("gdl", 1e-3, settings(data)) == "gdl" and format_lr(2.5e-4) == "2.5e-4"


def test_scoring_after_batchnorm_recalibration(study, data, tmp_path):
    """--recalibrate-bn N: the scored network's BatchNorm statistics are those re-estimated on N synthetic brains
    of the training maps (same seed for every run); the cached evaluation is redone and the report says so."""
    import shutil

    import torch

    from SegLossBrainLib.models.files import load_model
    from SegLossBrainLib.study.runner import RECALIBRATION_SEED, recalibrate
    from SegLossBrainLib.synthesis.generator import SynthesisSettings, SyntheticBrainGenerator
    from SegLossBrainLib.training.bn_recalibration import recalibrate_batchnorm

    out = tmp_path / "study"
    shutil.copytree(study[0], out)
    recalibrated = settings(data, recalibrate_bn=2)
    network, _ = load_model(out / "dice" / "best.safetensors")
    recalibrate(network, recalibrated, "cpu")
    expected, _ = load_model(out / "dice" / "best.safetensors")
    generator = SyntheticBrainGenerator(recalibrated.label_maps, SynthesisSettings(patch_size=(32, 32, 32)))
    rng = torch.Generator().manual_seed(RECALIBRATION_SEED)
    recalibrate_batchnorm(expected, lambda: generator.batch(1, rng)[0], samples=2)
    as_trained, _ = load_model(out / "dice" / "best.safetensors")
    name = next(k for k in network.state_dict() if k.endswith("running_mean"))
    assert torch.allclose(network.state_dict()[name], expected.state_dict()[name], atol=1e-6)
    assert not torch.allclose(network.state_dict()[name], as_trained.state_dict()[name], atol=1e-3)

    assert main(["study", "--out", str(out), "--report-only", "--recalibrate-bn", "2", "--device", "cpu",
                 "--data", str(data)]) == 0
    assert json.loads((out / "dice" / "evaluation.json").read_text())["key"]["recalibrate_bn"] == 2
    assert load_manifest(out)["settings"]["recalibrate_bn"] == 2
    assert "BatchNorm statistics on 2 fresh synthetic brains" in (out / "results.md").read_text()
    with pytest.raises(StudyError, match="recalibrate-bn must be >= 0"):
        settings(data, recalibrate_bn=-1)
