"""The loss study runner on a tiny study (2 arms, 2 seeds, 3 steps, 32^3 patches at 3 mm, phantom label maps): it
runs, skips a finished run and resumes an interrupted one, refuses changed settings (grid spacing and seeds too),
and writes the report (also alone)."""
import csv
import json
import os
import signal

import numpy as np
import pytest
import SimpleITK as sitk

from SegLossBrainLib.cli import main
from SegLossBrainLib.study.runner import (MANIFEST, StudyError, StudySettings, choose_vnet_loss, format_lr,
                                          load_manifest, parse_arms, run_id, run_study, settings_from_manifest)
from SegLossBrainLib.study.settings import default_patch_size, default_validation_size, planned_runs
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
                  arms=["dice", "explog"], validate_every=3, validation_size=(32, 32, 32), seeds=[1, 2],
                  learning_rates=[1e-3], grid_spacing=3.0, validation_bn_samples=2, validation_draws=1,
                  precision="fp32")  # bf16 on a CPU is not bit-reproducible: a few steps of a random model may differ
    values.update(overrides)
    return StudySettings(**values)


@pytest.fixture(scope="module")
def study(data, tmp_path_factory):
    """A study interrupted in its second arm, then run again to the end; returns (folder, events of the rerun)."""
    out = tmp_path_factory.mktemp("study")

    def interrupt(event):
        if event.get("event") == "step" and event["run"] == "explog_lr1e-3_s1" and event["step"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    first = run_study(out, settings(data), on_event=interrupt)
    assert first["status"] == "stopped"
    assert first["runs"] == {"dice_lr1e-3_s1": "finished", "explog_lr1e-3_s1": "stopped"}
    dice_checkpoint = (out / "dice_lr1e-3_s1" / "last.pt").stat().st_mtime_ns
    events = []
    second = run_study(out, settings(data), on_event=events.append)
    assert second["status"] == "finished"
    assert (out / "dice_lr1e-3_s1" / "last.pt").stat().st_mtime_ns == dice_checkpoint
    return out, events


def test_rerun_skips_the_finished_run_and_resumes_the_interrupted_one(study):
    out, events = study
    assert {"event": "run_skip", "run": "dice_lr1e-3_s1", "reason": "finished (3 steps)"} in events
    start = next(e for e in events if e["event"] == "run_start")
    assert start == {"event": "run_start", "run": "explog_lr1e-3_s1", "from_step": 1, "steps": 3}
    log = [json.loads(line) for line in open(out / "explog_lr1e-3_s1" / "log.jsonl")]
    assert [r["step"] for r in log] == [1, 2, 3] and "validation" in log[-1]
    manifest = load_manifest(out)
    runs = ["dice_lr1e-3_s1", "explog_lr1e-3_s1", "dice_lr1e-3_s2", "explog_lr1e-3_s2"]
    assert {r: v["status"] for r, v in manifest["runs"].items()} == dict.fromkeys(runs, "finished")
    assert manifest["runs"]["explog_lr1e-3_s2"]["loss_params"] == {"gamma_dice": 0.3, "gamma_cross": 0.3}
    assert manifest["runs"]["explog_lr1e-3_s2"]["seed"] == 2
    assert all((out / r / "best.safetensors").is_file() for r in runs)
    # the two seeds start from different weights: their first losses differ
    first = [json.loads(open(out / f"dice_lr1e-3_s{seed}" / "log.jsonl").readline())["loss"] for seed in (1, 2)]
    assert first[0] != first[1]


def test_evaluation_scores_the_best_weights_as_validation_did(study, data):
    """Validation re-estimated BatchNorm on a copy (the trained statistics stay in the weights); the evaluation of
    the best weights redoes it with the same draw and so reproduces the validation's held-out score."""
    import torch

    from SegLossBrainLib.models.files import load_model
    from SegLossBrainLib.study.runner import evaluate_run
    from SegLossBrainLib.synthesis.generator import SynthesisSettings, SyntheticBrainGenerator
    from SegLossBrainLib.training.bn_recalibration import recalibrated_copy

    out, _ = study
    run = out / "dice_lr1e-3_s2"
    validated = json.loads((run / "best.json").read_text())["validation"]["synthetic"]
    evaluation = evaluate_run(run, settings(data), "cpu")
    # equal up to the float16 rounding of the saved weights; scored as trained, the same weights score otherwise
    assert evaluation["synthetic"]["map_2.nii.gz"]["mean"] == pytest.approx(validated["map_2.nii.gz"]["mean"], abs=1e-4)
    as_trained = evaluate_run(run, settings(data, validation_bn_samples=0), "cpu")["synthetic"]["map_2.nii.gz"]["mean"]
    assert abs(as_trained - validated["map_2.nii.gz"]["mean"]) > 1e-3
    # the checkpoint holds the statistics as trained: re-estimating them (what validation did) changes them
    latest, _ = load_model(run / "latest.safetensors")
    checkpoint = torch.load(run / "last.pt", weights_only=True)["model"]
    name = next(k for k in checkpoint if k.endswith("running_mean"))
    assert torch.allclose(latest.state_dict()[name], checkpoint[name], rtol=1e-3, atol=1e-4)
    generator = SyntheticBrainGenerator(settings(data).label_maps, SynthesisSettings(patch_size=(32, 32, 32),
                                                                                     spacing_mm=3.0))
    again = recalibrated_copy(latest, generator, 2)
    assert not torch.allclose(again.state_dict()[name], checkpoint[name], atol=1e-3)


def test_refuses_changed_settings(study, data, capsys):
    out, _ = study
    recorded = (out / MANIFEST).read_bytes()
    with pytest.raises(StudyError, match=r"steps: recorded 3, now 4.*new --out folder"):
        run_study(out, settings(data, steps=4))
    with pytest.raises(StudyError, match=r"grid_spacing: recorded 3.0, now 1.5"):
        run_study(out, settings(data, grid_spacing=1.5))
    with pytest.raises(StudyError, match=r"seeds: recorded \[1, 2\], now \[1\]"):
        run_study(out, settings(data, seeds=[1]))
    for option in (["--learning-rates", "1e-4"], ["--grid-spacing", "2"], ["--seeds", "1,2,3"]):
        assert main(["study", "--out", str(out), *option, "--device", "cpu", "--data", str(data)]) == 2
    assert "grid_spacing: recorded 3.0, now 2.0" in capsys.readouterr().err
    assert (out / MANIFEST).read_bytes() == recorded  # refused: nothing rewritten


def test_report_columns_and_structure_order(study, data):
    out, _ = study
    manifest = load_manifest(out)
    report = report_study(out, settings(data), manifest)
    assert any("SHRUNKEN SETTING" in line for line in report["note"])
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert {(r["arm"], r["seed"], r["set"], r["case"]) for r in rows} == {
        (arm, seed, s, case) for arm in ("dice", "explog") for seed in ("1", "2")
        for s, case in (("real", "scan"), ("synthetic", "map_2.nii.gz"))}
    shares = manifest["structure_share"]
    ranks = {r["structure"]: int(r["size_rank"]) for r in rows}
    assert [shares[n] for n in sorted(ranks, key=ranks.get)] == sorted(shares.values(), reverse=True)
    text = (out / "results.md").read_text()
    assert "3 steps per run, patch 32x32x32 voxels at 3 mm (96x96x96 mm)" in text and "COARSE GRID: 3 mm" in text
    assert "seed(s) 1, 2" in text and "## Voxels per structure at 3 mm" in text
    section = text.split("## Dice per structure, real dev scans")[1].split("**mean of the 17**")[0]
    table = [line.split("|") for line in section.splitlines() if line.startswith("| ") and "share %" not in line and line.count("|") > 3]
    assert len(table) == 17
    listed = [float(cells[2]) for cells in table]
    assert listed == sorted(listed, reverse=True)  # largest first, smallest last
    # each cell is the mean ± sd over the two seeds of that run's Dice
    dice = {(r["arm"], r["seed"]): float(r["dice"]) for r in rows
            if r["set"] == "real" and r["structure"] == "cerebral cortex" and r["dice"]}
    cortex = next(cells for cells in table if cells[1].strip() == "cerebral cortex")
    expected = [dice[("dice", "1")], dice[("dice", "2")]]
    assert cortex[4].strip() == f"{np.mean(expected):.3f} ± {np.std(expected, ddof=1):.3f}"
    ranking = text.split("Ranking at learning rate 1e-3, real dev scans")[1].split("\n\n")[1]
    assert ranking.count("(n 2)") == 2  # one real scan x two seeds per arm
    assert "apart: " in text and (out / "validation_curves.png").stat().st_size > 0
    assert (out / "structure_dice.png").stat().st_size > 0
    assert not (out / "lr_sensitivity.png").exists()  # one learning rate: nothing to compare


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
    assert parse_arms("vnet,wce,dice_ce,dice") == ["dice", "wce", "dice_ce", "vnet"]
    assert parse_arms(None)[-1] == "vnet" and len(parse_arms(None)) == 9
    for bad, message in (("vnet", "at least one Wong arm"), ("dice,focalx", "unknown arm")):
        with pytest.raises(StudyError, match=message):
            parse_arms(bad)
    two = settings(data, learning_rates=[1e-3, 1e-4], seeds=[0, 1], arms=["gdl", "dice"])
    assert run_id("gdl", 1e-4, 1, two) == "gdl_lr1e-4_s1" and format_lr(2.5e-4) == "2.5e-4"
    # seed by seed, rate by rate, arms in table order: every arm shares the seeds
    assert [r[0] for r in planned_runs(two)] == ["dice_lr1e-3_s0", "gdl_lr1e-3_s0", "dice_lr1e-4_s0", "gdl_lr1e-4_s0",
                                                 "dice_lr1e-3_s1", "gdl_lr1e-3_s1", "dice_lr1e-4_s1", "gdl_lr1e-4_s1"]


def test_defaults_of_a_new_study_and_bad_values(data):
    """Whole head at 3 mm: 192 mm patch, whole-brain validation grid; two rates, two seeds, poly schedule."""
    plain = StudySettings(steps=10, label_maps=["a"], validation_maps=["b"])
    assert (plain.grid_spacing, plain.patch_size, plain.validation_size) == (3.0, (64, 64, 64), (64, 80, 64))
    assert (plain.learning_rates, plain.seeds, plain.lr_schedule) == ([1e-3, 1e-4], [0, 1], "poly")
    assert (plain.validation_bn_samples, plain.validation_draws, plain.precision) == (16, 2, "bf16")
    assert default_patch_size(1.5) == (128, 128, 128) and default_validation_size(1.5) == (112, 144, 112)
    for overrides, message in (({"grid_spacing": 5}, "--grid-spacing must lie in"),
                               ({"seeds": [0, 0]}, "seeds repeat"), ({"seeds": []}, "at least one seed"),
                               ({"patch_size": (40, 40, 40)}, "--patch-size 40x40x40 at 3 mm: patch_size must be"),
                               ({"validation_bn_samples": -1}, "--validation-bn-samples must be >= 0")):
        with pytest.raises(StudyError, match=message):
            settings(data, **overrides)


def test_bad_options_of_a_new_study_write_nothing(data, tmp_path, capsys):
    for option, message in ((["--grid-spacing", "5"], "--grid-spacing must lie in (0, 4] mm"),
                            (["--seeds", "0,x"], "--seeds takes whole numbers"),
                            (["--seeds", "0", "--seed", "1"], "give --seeds or --seed, not both")):
        out = tmp_path / "new"
        assert main(["study", "--out", str(out), "--steps", "3", "--data", str(data), "--label-maps",
                     str(data / "maps"), "--validation-maps", "map_2.nii.gz", "--no-real", *option]) == 2
        assert message in capsys.readouterr().err and not out.exists()


def test_a_version_1_study_is_read_as_it_ran(data, tmp_path):
    """A study.json made before seeds and grids: one seed, 1.5 mm, constant rate, and its old run names."""
    old = {"steps": 3, "patch_size": [32, 32, 32], "label_maps": ["m0"], "validation_maps": ["m2"], "real_pairs": [],
           "arms": ["dice", "explog", "vnet"], "learning_rates": [0.001], "seed": 4, "validate_every": 3,
           "checkpoint_every": 100, "precision": "bf16", "validation_size": [32, 32, 32], "synthesis": {},
           "device": "cpu", "recalibrate_bn": 0}
    recorded = settings_from_manifest({"version": 1, "settings": old})
    assert (recorded.seeds, recorded.grid_spacing, recorded.lr_schedule, recorded.validation_bn_samples) == \
        ([4], 1.5, "constant", 0)
    assert [r[0] for r in planned_runs(recorded)] == ["dice", "explog", "vnet"]
    two_rates = settings_from_manifest({"version": 1, "settings": {**old, "learning_rates": [1e-3, 1e-4]}})
    assert run_id("gdl", 1e-4, 4, two_rates) == "gdl_lr1e-4"


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
    best = out / "dice_lr1e-3_s1" / "best.safetensors"
    network, _ = load_model(best)
    recalibrate(network, recalibrated, "cpu")
    expected, _ = load_model(best)
    generator = SyntheticBrainGenerator(recalibrated.label_maps, SynthesisSettings(patch_size=(32, 32, 32),
                                                                                 spacing_mm=3.0))
    rng = torch.Generator().manual_seed(RECALIBRATION_SEED)
    recalibrate_batchnorm(expected, lambda: generator.batch(1, rng)[0], samples=2)
    as_trained, _ = load_model(best)
    name = next(k for k in network.state_dict() if k.endswith("running_mean"))
    assert torch.allclose(network.state_dict()[name], expected.state_dict()[name], atol=1e-6)
    assert not torch.allclose(network.state_dict()[name], as_trained.state_dict()[name], atol=1e-3)

    assert main(["study", "--out", str(out), "--report-only", "--recalibrate-bn", "2", "--device", "cpu",
                 "--data", str(data)]) == 0
    assert json.loads((out / "dice_lr1e-3_s1" / "evaluation.json").read_text())["key"]["recalibrate_bn"] == 2
    assert load_manifest(out)["settings"]["recalibrate_bn"] == 2
    assert "BatchNorm statistics on 2 fresh synthetic brains" in (out / "results.md").read_text()
    with pytest.raises(StudyError, match="recalibrate-bn must be >= 0"):
        settings(data, recalibrate_bn=-1)
