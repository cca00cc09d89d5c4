"""Fine-tuning to a time budget, and a run killed mid-way continued from its checkpoint.

Same phantom pairs and random base model as test_finetune.py (its fixtures), a few 32^3 steps on one thread."""
import pytest
import torch

from SegLossBrainLib.finetuning import budget, unfinished
from SegLossBrainLib.finetuning.finetune import FinetuneError, continue_finetune, finetune
from SegLossBrainLib.models.files import load_model

from test_finetune import config, one_thread, pairs, store, store_files  # noqa: F401 (fixtures)


def test_plan_fits_the_budget_by_hand():
    # 480 s budget, 30 s already spent, 5 validations of 6 s, 5 s to save, steps planned 8 % slower than timed:
    # (480 - 30 - 30 - 5) // (0.5 * 1.08) = 768 steps, validated every ceil(768 / 5) = 154
    assert budget.STEP_MARGIN == 1.08
    plan = budget.plan_steps(1000, 480, 30, 0.5, 6, 5)
    assert (plan.steps, plan.validate_every, plan.limited_by_time) == (768, 154, True)
    assert plan.validations() == 5
    # after 154 steps and one validation: 614 steps at the measured 0.5 s, 4 validations, the save
    assert plan.seconds_left(154, 1) == pytest.approx(614 * 0.5 + 4 * 6 + budget.SAVE_SECONDS)
    # a fast device: the requested steps fit, the budget does not cut them
    fast = budget.plan_steps(1000, 480, 30, 0.05, 1, 5)
    assert (fast.steps, fast.validate_every, fast.limited_by_time) == (1000, 200, False)
    # no budget, explicit spacing; a budget already spent still runs past the probe
    assert budget.plan_steps(50, 0, 999, 1.0, 1, 5, validate_every=7).validate_every == 7
    assert budget.plan_steps(50, 10, 999, 1.0, 1, 5).steps == budget.PROBE_STEPS + 1
    with pytest.raises(ValueError):
        budget.plan_steps(0, 10, 0, 1.0, 1, 5)


def test_time_budget_plans_the_steps_and_the_eta_counts_down(store, pairs, random_model_file):
    events = []
    result = finetune(config(pairs, random_model_file, steps=10_000, validate_every=0, max_minutes=0.5,
                             validations=2), on_event=events.append)
    plan = [e for e in events if e.get("kind") == "plan"]
    assert len(plan) == 1 and 4 <= plan[0]["planned_steps"] < 10_000
    assert result.steps_run == plan[0]["planned_steps"] and result.status == "finished"
    steps = [e for e in events if e["event"] == "step"]
    assert all(e["total"] == plan[0]["planned_steps"] for e in steps[budget.PROBE_STEPS - 1:])
    assert steps[-1]["eta_s"] <= steps[budget.PROBE_STEPS]["eta_s"]
    assert load_model(result.path)[1]["finetune"]["planned_steps"] == plan[0]["planned_steps"]


def test_a_crashed_run_continues_to_the_same_weights(store, pairs, random_model_file):
    # fp32 (config's): two uninterrupted bf16 runs on a CPU already differ in the last bits (oneDNN's bf16 kernels)
    settings = dict(steps=6, validate_every=2)
    reference = finetune(config(pairs, random_model_file, name="straight", **settings))

    class Crash(RuntimeError):
        pass

    def crash_at_step_5(event):
        if event["event"] == "step" and event["step"] == 5:
            raise Crash()

    with pytest.raises(Crash):
        finetune(config(pairs, random_model_file, name="crashed", **settings), on_event=crash_at_step_5)
    assert "crashed.safetensors" not in store_files(store) and unfinished.find("crashed").step == 4
    continued = continue_finetune("crashed")
    assert continued.name == "crashed" and continued.steps_run == 6 and continued.best_step == reference.best_step
    weights, expected = load_model(continued.path)[0].state_dict(), load_model(reference.path)[0].state_dict()
    assert all(torch.equal(weights[k], expected[k]) for k in expected)
    assert continued.after == reference.after


def test_continuing_needs_an_unfinished_run_with_unchanged_cases(store, pairs, random_model_file):
    with pytest.raises(FinetuneError, match="no unfinished fine-tune named 'nothing'"):
        continue_finetune("nothing")

    def crash(event):
        if event["event"] == "step" and event["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(config(pairs, random_model_file, steps=6, validate_every=1), on_event=crash)
    with open(pairs[0][1], "ab") as labels:  # the case changed on disk since the run started
        labels.write(b"\0")
    with pytest.raises(FinetuneError, match="case files of this run changed"):
        continue_finetune("site-v1")
    unfinished.discard("site-v1")
    assert store_files(store) == []


def test_cli_lists_continues_and_discards_unfinished_runs(store, pairs, random_model_file, capsys):
    from SegLossBrainLib.cli import main

    def crash(event):
        if event["event"] == "step" and event["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(config(pairs, random_model_file, steps=6, validate_every=1), on_event=crash)
    assert main(["finetune", "--list-unfinished"]) == 0
    assert "site-v1: step 2 of 6 (interrupted; no version saved)" in capsys.readouterr().out
    assert main(["finetune", "--continue", "site-v1", "--threads", "1"]) == 0  # with the run's own settings
    assert "finished: site-v1 written" in capsys.readouterr().out
    assert main(["finetune", "--discard", "site-v1"]) == 2  # nothing left to discard
    assert "no unfinished fine-tune named 'site-v1'" in capsys.readouterr().err
    assert main(["finetune", "--name", "x"]) == 2  # a new run needs its pairs
    assert "give the training pairs" in capsys.readouterr().err


def test_a_single_case_without_validation_stays_small(store, pairs, random_model_file, monkeypatch):
    from SegLossBrainLib.finetuning import run as run_module

    monkeypatch.setattr(run_module, "SINGLE_CASE_STEPS", 6)  # 200 in the product: too slow for a test
    events = []
    result = finetune(config(pairs[:1], random_model_file, steps=500, validate_every=3, learning_rate=3e-4,
                             max_minutes=0), on_event=events.append)
    meta = load_model(result.path)[1]
    assert result.steps_run == 6 and meta["learning_rate"] == run_module.SINGLE_CASE_LR == 3e-5
    assert any(e.get("kind") == "single_case" and e.get("level") == "warning" for e in events)
    assert meta["validation"]["mode"] == "training case (no held-out case)"


def test_a_single_case_version_is_halfway_to_the_base(store, pairs, random_model_file, monkeypatch):
    """WiSE-FT for one case: the saved weights are base + 0.5 (tuned - base). The same run (same seed, fp32) saved
    without blending gives 'tuned'; the midpoint is computed here from the two files."""
    from SegLossBrainLib.finetuning import run as run_module

    monkeypatch.setattr(run_module, "SINGLE_CASE_STEPS", 4)
    saved = {}
    for blend in (1.0, 0.5):
        monkeypatch.setattr(run_module, "SINGLE_CASE_BLEND", blend)
        events = []
        result = finetune(config(pairs[:1], random_model_file, name=f"one-{blend:g}", steps=500, validate_every=2,
                                 max_minutes=0, precision="fp32"), on_event=events.append)
        network, meta = load_model(result.path)
        saved[blend] = network.state_dict()
        assert meta["finetune"]["single_case_blend"] == blend
        assert any(e.get("kind") == "single_case_blend" for e in events)
    base = load_model(random_model_file)[0].state_dict()
    moved = 0
    for name, start in base.items():
        if not start.is_floating_point():
            continue
        tuned = saved[1.0][name].float()
        midpoint = start.float() + 0.5 * (tuned - start.float())
        # files hold float16: compare within its rounding
        assert torch.allclose(saved[0.5][name].float(), midpoint, rtol=2e-3, atol=1e-4), name
        moved += int(not torch.equal(tuned, start))
    assert moved > 0  # the fine-tune did change weights, so the check above is not base == base
