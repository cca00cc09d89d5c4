"""The fine-tuning plan's words agree with its numbers: a budget already used up by the first validation and steps
is not called a fit; the per-structure summary says which structures the mean leaves out."""
from types import SimpleNamespace

from SegLossBrainLib.cli.finetune import _print_summary
from SegLossBrainLib.finetuning import budget


def test_a_budget_already_spent_is_not_said_to_fit():
    # 2 minutes, of which the probe and the validation took 100 s; 8 s a step: no step fits, the fewest run.
    plan = budget.plan_steps(1000, 120, 100, 8.0, 20, 5)
    assert plan.steps == budget.PROBE_STEPS + 1 and plan.over_budget
    text = plan.limit_text(2)
    assert "fits" not in text and "already used up" in text
    fitting = budget.plan_steps(1000, 480, 30, 0.5, 6, 5)
    assert not fitting.over_budget and fitting.limit_text(8) == "fits the 8-minute budget"
    assert budget.plan_steps(10, 480, 30, 0.5, 6, 5).limit_text(8) == "as requested"


def test_the_summary_marks_what_the_mean_leaves_out(capsys):
    dice = {"cerebral white matter": 0.9, "CSF": 0.3, "optic chiasm": None, "thalamus": 0.8}
    scored = ["cerebral white matter", "thalamus"]
    result = SimpleNamespace(path="/store/v.safetensors", status="finished", name="v", best_step=10,
                             before={"mean": 0.85, "dice": dice, "scored": scored},
                             after={"mean": 0.86, "dice": dice, "scored": scored})
    _print_summary(result)
    lines = capsys.readouterr().out.splitlines()
    assert "mean over 2 structures; CSF, optic chiasm left out" in lines[1]
    assert [line for line in lines if "(left out of the mean)" in line] == [line for line in lines if "CSF" in line
                                                                             and line.startswith("  ")]
    assert not any("thalamus" in line and "left out" in line for line in lines)
