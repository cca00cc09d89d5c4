"""The loss study's statistics on hand-made numbers: the convergence rule, paired differences and the ranking,
and the report's tables built from them (runs that did not converge, ranking, learning-rate sensitivity)."""
import json
import math

import pytest

from SegLossBrainLib.study.report import judge_runs, markdown
from SegLossBrainLib.study.settings import StudySettings
from SegLossBrainLib.study.statistics import convergence, format_difference, paired_difference, ranking, unit_scores


def curve(values, every=100):
    return [(every * (i + 1), v) for i, v in enumerate(values)]


def test_convergence_rule_on_hand_made_curves():
    # 1000 steps, validated every 100: the last quarter is steps 800, 900, 1000
    flat = curve([0.2, 0.5, 0.7, 0.78, 0.800, 0.79, 0.797, 0.796, 0.798, 0.797])
    result = convergence(flat, 1000)
    assert result["converged"] is True and result["flat"] is True
    assert (result["best"], result["best_step"], result["late_validations"]) == (0.8, 500, 3)
    assert result["best_last_quarter"] == pytest.approx(0.798) and result["gain_last_quarter"] == pytest.approx(0.0)
    fell_off = curve([0.2, 0.5, 0.7, 0.78, 0.800, 0.79, 0.79, 0.794, 0.790, 0.780])  # last quarter 0.006 below
    assert convergence(fell_off, 1000)["converged"] is False
    edge = curve([0.2, 0.5, 0.7, 0.78, 0.800, 0.79, 0.79, 0.7955, 0.790, 0.780])  # 0.0045 below: within 0.005
    assert convergence(edge, 1000)["converged"] is True
    # still rising: the rule passes it (its best is in the last quarter); it is not flat (0.70 at step 700, 0.76 last)
    rising = curve([0.2, 0.3, 0.4, 0.5, 0.6, 0.65, 0.70, 0.72, 0.74, 0.76])
    result = convergence(rising, 1000)
    assert result["converged"] is True and result["flat"] is False
    assert result["gain_last_quarter"] == pytest.approx(0.06)
    assert convergence(curve([0.5, 0.6]), 1000)["converged"] is None  # unfinished: not judged
    assert convergence(curve([0.5, 0.6], every=500), 1000)["converged"] is False  # one validation in the last quarter
    assert convergence(curve([0.5, float("nan"), 0.6, 0.6]), 400)["best"] == 0.6


def test_paired_difference_and_ranking_by_hand():
    a = {("x", 0): 0.8, ("y", 0): 0.7, ("x", 1): 0.9, ("y", 1): 0.6}
    b = {("x", 0): 0.7, ("y", 0): 0.7, ("x", 1): 0.8, ("y", 1): 0.5}
    c = {("x", 0): 0.75, ("y", 0): 0.5, ("x", 1): 0.6, ("y", 1): 0.55, ("z", 1): 0.9}
    # a - b = 0.1, 0, 0.1, 0.1: mean 0.075, sd 0.05, s.e. 0.025, 3 wins, 0 losses
    d = paired_difference(a, b)
    assert (d["n"], d["wins"], d["losses"]) == (4, 3, 0)
    assert d["mean"] == pytest.approx(0.075) and d["se"] == pytest.approx(0.025)
    assert format_difference(d) == "+0.075 ± 0.025 (3/4)"
    # b - c over the 4 shared units (c's extra unit z is left out): -0.05, 0.2, 0.2, -0.05
    d = paired_difference(b, c)
    assert d["n"] == 4 and d["mean"] == pytest.approx(0.075) and (d["wins"], d["losses"]) == (2, 2)
    rows = ranking({"c": c, "a": a, "b": b})
    assert [r["arm"] for r in rows] == ["a", "b", "c"]  # a 0.75, b 0.675, c 0.66
    assert rows[0]["mean"] == pytest.approx(0.75) and rows[0]["to_best"] is None
    assert rows[0]["se"] == pytest.approx(math.sqrt(((0.05 ** 2) * 2 + 0.15 ** 2 * 2) / 3) / 2)
    assert rows[1]["to_best"]["mean"] == pytest.approx(-0.075) and rows[2]["to_next"] is None
    assert rows[2]["n"] == 5 and rows[2]["to_best"]["n"] == 4
    assert format_difference(paired_difference({}, {})) == "–"


def test_unit_scores_pair_images_across_seeds():
    evaluations = {"r0": {"real": {"bert": {"mean": 0.7}, "vxm": {"mean": 0.6}}},
                   "r1": {"real": {"bert": {"mean": 0.8}, "vxm": {"mean": None}}}, "r2": None}
    assert unit_scores(evaluations, [("r0", 0), ("r1", 1), ("r2", 2)], "real") == pytest.approx(
        {("bert", 0): 0.7, ("vxm", 0): 0.6, ("bert", 1): 0.8, ("vxm", 1): float("nan")}, nan_ok=True)


@pytest.fixture
def hand_made(tmp_path):
    """Two arms x two rates x two seeds with hand-made scores and logs; no network involved."""
    settings = StudySettings(steps=400, label_maps=["m"], validation_maps=["h"], arms=["dice", "gdl"],
                             learning_rates=[1e-3, 1e-4], seeds=[0, 1])
    scores = {("dice", "1e-3"): (0.80, 0.70), ("dice", "1e-4"): (0.78, 0.69),
              ("gdl", "1e-3"): (0.60, 0.50), ("gdl", "1e-4"): (0.75, 0.66)}
    evaluations, structures = {}, ["cerebral cortex"]
    for seed in (0, 1):
        for (arm, rate), (synthetic, real) in scores.items():
            rid = f"{arm}_lr{rate}_s{seed}"
            shift = 0.01 * seed
            evaluations[rid] = {"synthetic": {"h": {"mean": synthetic + shift, "dice": {"cerebral cortex": synthetic}}},
                                "real": {"bert": {"mean": real + shift, "dice": {"cerebral cortex": real}}}}
            (tmp_path / rid).mkdir()
            # every 50 steps, 2 in the last quarter: dice still rising there (+0.02); gdl falls 0.05 below its best
            values = [0.3, 0.5] + ([synthetic - 0.02] * 4 + [synthetic - 0.01, synthetic] if arm == "dice" else
                                   [synthetic] * 4 + [synthetic - 0.05] * 2)
            (tmp_path / rid / "log.jsonl").write_text("".join(
                json.dumps({"step": 50 * (i + 1), "validation": {"synthetic_mean": v, "real_mean": real}}) + "\n"
                for i, v in enumerate(values)))
    manifest = {"structure_share": {"cerebral cortex": 0.3}, "runs": {}}
    return tmp_path, settings, manifest, evaluations


def test_report_tables_from_hand_made_numbers(hand_made):
    from SegLossBrainLib.labels import load_label_table

    out, settings, manifest, evaluations = hand_made
    judged = judge_runs(out, settings)
    assert {rid for rid, c in judged.items() if not c["converged"]} == {
        f"gdl_lr{r}_s{s}" for r in ("1e-3", "1e-4") for s in (0, 1)}
    text = markdown(out, settings, manifest, evaluations, load_label_table(), ["note"], judged)
    assert "Runs that did not converge: gdl_lr1e-3_s0, gdl_lr1e-4_s0, gdl_lr1e-3_s1, gdl_lr1e-4_s1." in text
    assert "Still rising (gained more than 0.005 in the last quarter): dice_lr1e-3_s0, dice_lr1e-4_s0, " \
           "dice_lr1e-3_s1, dice_lr1e-4_s1." in text
    assert "| gdl_lr1e-3_s0 | – | – | 0.001 | 0 | 0/400 | not started | – | no (2 validations: best 0.550 vs 0.600; " \
           "gained +0.000) |" in text
    ranking_text = text.split("Ranking at learning rate 1e-3, held-out synthetic maps")[1].split("\n\n")[1]
    rows = [line.split(" | ") for line in ranking_text.splitlines()[2:]]
    # dice: 0.80 and 0.81 over the two seeds; gdl 0.60, 0.61: dice wins both units by 0.20
    assert rows[0][1] == "dice lr 1e-3" and rows[0][2] == "0.805 ± 0.005 (n 2)"
    assert rows[1][1] == "gdl lr 1e-3" and rows[1][4].startswith("-0.200 ± 0.000 (0/2)")
    sensitivity = text.split("## Learning-rate sensitivity")[1].split("### held-out synthetic maps")[1]
    # the change from 1e-3 to 1e-4, paired over the seeds: dice -0.02 (0 of 2 higher), gdl +0.15 (2 of 2)
    assert "| dice | 0.805 | 0.785 | -0.020 ± 0.000 (0/2) |" in sensitivity
    assert "| gdl | 0.605 | 0.755 | +0.150 ± 0.000 (2/2) |" in sensitivity
