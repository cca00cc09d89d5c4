"""Which weights a fine-tune keeps and when it stops early (issue 31): one validation case's Dice is noisy, so
neither a single dip nor an early lucky peak may decide a run. The rules on scripted scores (hand-worked), then
through a whole fine-tune whose validation scores are scripted."""
from types import SimpleNamespace

import pytest
import torch
from test_finetune import config, pairs, store  # noqa: F401  (fixtures)

from SegLossBrainLib.finetuning import validator as validation
from SegLossBrainLib.finetuning.finetune import finetune
from SegLossBrainLib.finetuning.validator import KEEP_MARGIN, STOP_MARGIN, Validator


def scripted(monkeypatch, scores):
    """Validator.evaluate returns these scores in turn (the first is the base model's)."""
    remaining = list(scores)

    def evaluate(self, network):
        score = remaining.pop(0)
        self.seconds.append(0.01)
        return {"score": score, "mean": round(score, 4), "dice": {}, "scored": []}

    monkeypatch.setattr(Validator, "evaluate", evaluate)
    return remaining


class Steps:
    step = 0


def validate_in_turn(validator, network, count):
    kept = []
    for step in range(1, count + 1):
        validator.trainer.step = step
        with torch.no_grad():
            network.weight.fill_(step)  # the weights say which step they are from
        validator(network)
        kept.append(validator.best["step"])
    return kept


def test_the_latest_weights_within_the_margin_of_the_best_are_kept(monkeypatch):
    assert KEEP_MARGIN == pytest.approx(0.005)
    # best so far after each: .80, .83, .83, .83, .83; within .005 of it: steps 1, 2, 3, -, 5
    scripted(monkeypatch, [0.80, 0.83, 0.828, 0.81, 0.826])
    validator = Validator([], torch.device("cpu"))
    validator.trainer = Steps()
    network = torch.nn.Linear(1, 1, bias=False)
    assert validate_in_turn(validator, network, 5) == [1, 2, 3, 3, 5]
    assert validator.best["state"]["weight"].item() == 5 and validator.best["top"] == pytest.approx(0.83)


def test_a_lower_score_never_drags_the_kept_weights_down_step_by_step(monkeypatch):
    # each 0.004 below the one before: within the margin of the previous, not of the best (0.83)
    scripted(monkeypatch, [0.83, 0.826, 0.822, 0.818])
    validator = Validator([], torch.device("cpu"))
    validator.trainer = Steps()
    assert validate_in_turn(validator, torch.nn.Linear(1, 1, bias=False), 4) == [1, 2, 2, 2]


@pytest.mark.parametrize("scores,step,planned,stops", [
    ([0.80, 0.81], 6, 10, True),  # two below the base (0.82 - 0.005), second half
    ([0.80, 0.81], 4, 10, False),  # the same, first half
    ([0.80, 0.83], 6, 10, False),  # a dip, then back above the base
    ([0.80, 0.816], 6, 10, False),  # below the base by less than the margin: noise
    ([0.81], 6, 10, False),  # fewer validations than the patience
])
def test_only_validations_below_the_base_in_a_row_stop_a_run(scores, step, planned, stops):
    validator = Validator([], torch.device("cpu"))
    validator.base_score, validator.scores = 0.82, scores
    assert STOP_MARGIN == pytest.approx(0.005) and validation.STOP_AFTER == 0.5
    reason = validator.early_stop(step, planned, patience=2)
    assert (reason is not None) == stops
    if stops:
        assert "0.800, 0.810" in reason and "0.820" in reason


def test_a_run_that_dips_below_its_best_runs_to_the_end_and_keeps_its_last_weights(store, pairs, monkeypatch,  # noqa: F811
                                                                                   random_model_file):
    # base 0.5; step 2 best; steps 4 and 6 below the best (the old rule, patience 2 in the second half, stopped
    # here at step 6 and kept step 2), never below the base; step 8 the best
    left = scripted(monkeypatch, [0.50, 0.52, 0.51, 0.505, 0.60])
    result = finetune(config(pairs, random_model_file, steps=8, validate_every=2, patience=2, max_minutes=0))
    assert (result.status, result.steps_run, result.best_step) == ("finished", 8, 8) and left == []
    assert result.metadata["finetune"]["validation_scores"] == [0.52, 0.51, 0.505, 0.60]


def test_a_run_that_stays_below_the_base_stops_in_its_second_half(store, pairs, monkeypatch,  # noqa: F811
                                                                   random_model_file):
    scripted(monkeypatch, [0.50, 0.40, 0.45, 0.44, 0.9])
    events = []
    result = finetune(config(pairs, random_model_file, steps=8, validate_every=2, patience=2, max_minutes=0),
                      on_event=events.append)
    assert (result.status, result.steps_run) == ("early_stopped", 4)
    assert result.best_step == 4  # 0.45, the best of the run
    assert any(e.get("kind") == "early_stopped" and "below the base model's 0.500" in e["message"] for e in events)


@pytest.mark.parametrize("convention", ["freesurfer", "index"])
def test_csf_against_background_is_no_disagreement_for_aseg_labels(monkeypatch, convention):
    # aseg leaves sulcal CSF at 0: predicted CSF there is a convention no score counts; cortex there is not
    labels = torch.tensor([[[0, 0, 0, 16, 2, 1]]])
    predicted = torch.tensor([[[0, 16, 2, 0, 2, 2]]])
    probabilities = torch.nn.functional.one_hot(predicted, 20).permute(3, 0, 1, 2).float()
    monkeypatch.setattr(validation, "predict_probabilities", lambda network, image, device: probabilities)
    pair = SimpleNamespace(image=torch.zeros(1, 1, 1, 6), labels=labels, convention=convention)
    mask = validation.focus_masks(torch.nn.Linear(1, 1), [pair], torch.device("cpu"))[0]
    expected = [False, False, True, False, False, True] if convention == "freesurfer" else \
        [False, True, True, True, False, True]
    assert mask.flatten().tolist() == expected


def test_the_time_left_is_within_the_budget_from_the_first_step(store, pairs, random_model_file):  # noqa: F811
    # before the plan (made after 3 timed steps) the time left used to assume all 1000 requested steps
    events = []
    finetune(config(pairs, random_model_file, steps=1000, validate_every=0, max_minutes=0.25), on_event=events.append)
    steps = [e for e in events if e["event"] == "step"]
    assert len(steps) > 3 and all(e["eta_s"] <= 15 for e in steps)
