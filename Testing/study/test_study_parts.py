"""A study shared by parallel processes (``--part K/N``): each part trains its share, ``study.json`` keeps every
part's records although each process holds a stale copy, V-Net waits for all Wong runs, the last part reports."""
import json

import pytest

from SegLossBrainLib.cli import main
from SegLossBrainLib.study.runner import (StudyError, load_manifest, open_study, parse_part, run_study, share,
                                          update_manifest)
from SegLossBrainLib.study.settings import planned_runs

from test_study import data, settings  # noqa: F401  (the tiny study's phantom data and settings)


def test_parse_part_and_share(data):
    assert parse_part("2/3") == (2, 3)
    for bad in ("0/2", "3/2", "2", "a/b", "1/0"):
        with pytest.raises(StudyError, match="--part"):
            parse_part(bad)
    runs = planned_runs(settings(data, arms=["dice", "wce", "explog"]))  # 3 arms x 2 seeds
    ids = [r[0] for r in runs]
    first, second = [r[0] for r in share(runs, (1, 2))], [r[0] for r in share(runs, (2, 2))]
    assert first == ids[0::2] and second == ids[1::2]
    assert sorted(first + second) == sorted(ids)  # every run in exactly one part
    assert share(runs, (1, 1)) == runs


def test_stale_copies_do_not_drop_each_others_records(data, tmp_path):
    """Two processes opened the study before either wrote a run: each writes its own record into study.json."""
    one = open_study(tmp_path, settings(data))
    two = json.loads(json.dumps(one))  # the other process's copy, read at the same time
    one["runs"]["dice_lr1e-3_s1"] = {"status": "finished", "step": 3}
    update_manifest(tmp_path, one, runs=("dice_lr1e-3_s1",))
    two["runs"]["explog_lr1e-3_s2"] = {"status": "diverged", "step": 2}
    update_manifest(tmp_path, two, runs=("explog_lr1e-3_s2",))
    on_disk = load_manifest(tmp_path)["runs"]
    assert on_disk == {"dice_lr1e-3_s1": {"status": "finished", "step": 3},
                       "explog_lr1e-3_s2": {"status": "diverged", "step": 2}}
    assert two["runs"] == on_disk  # the writer's copy now has the other part's record too
    assert not (tmp_path / "study.json.lock").exists()


def test_two_parts_share_one_study_and_vnet_waits(data, tmp_path):
    tiny = settings(data, arms=["dice", "explog", "vnet"], seeds=[1])
    first = run_study(tmp_path, tiny, part=(1, 2))
    # part 1 trained the first Wong run; V-Net needs the other part's run too
    assert first == {"status": "waiting", "runs": {"dice_lr1e-3_s1": "finished"}}
    assert load_manifest(tmp_path)["vnet_loss"] is None
    second = run_study(tmp_path, tiny, part=(2, 2))
    # part 2 trained its Wong run and, all Wong runs done, chose the V-Net loss; the V-Net run is part 1's share
    assert second["runs"] == {"explog_lr1e-3_s1": "finished"} and second["status"] == "waiting"
    manifest = load_manifest(tmp_path)
    assert manifest["vnet_loss"] in ("dice", "explog")
    third = run_study(tmp_path, tiny, part=(1, 2))
    assert third["status"] == "finished" and third["runs"]["vnet_lr1e-3_s1"] == "finished"
    manifest = load_manifest(tmp_path)
    assert {rid: record["status"] for rid, record in manifest["runs"].items()} == {
        "dice_lr1e-3_s1": "finished", "explog_lr1e-3_s1": "finished", "vnet_lr1e-3_s1": "finished"}


def test_cli_part_option(data, tmp_path, capsys):
    common = ["study", "--out", str(tmp_path / "s"), "--steps", "2", "--patch-size", "32", "--validation-size", "32",
              "--arms", "dice,explog", "--seeds", "1", "--learning-rates", "1e-3", "--validate-every", "2",
              "--validation-bn-samples", "1", "--validation-draws", "1", "--precision", "fp32", "--no-real",
              "--label-maps", str(data / "maps"), "--validation-maps", "map_2.nii.gz", "--threads", "1"]
    assert main(common + ["--part", "3/2"]) == 2
    assert not (tmp_path / "s").exists()  # a refused option writes nothing
    assert main(common + ["--part", "2/2"]) == 0
    assert "waiting for the other parts" in capsys.readouterr().out
    assert not (tmp_path / "s" / "results.csv").exists()  # no report while runs are missing
    assert main(common + ["--part", "1/2"]) == 0
    assert (tmp_path / "s" / "results.csv").is_file()  # the part that finished last wrote the report
