"""Validation during fine-tuning: which case, its Dice per structure, the best weights so far; and where the
base model disagrees with the training labels (the patches fine-tuning favours).

Dice is computed on the 1.5 mm network grid (what the network sees), against the case's labels brought there
by nearest neighbour (``training/labelled_scans.py``); scores against FreeSurfer aseg leave out CSF and optic
chiasm, as ``seglossbrain evaluate`` does.
"""
from __future__ import annotations

import math
import time
from enum import Enum
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..evaluation.metrics import dice_per_label
from ..inference.segment import predict_probabilities
from ..labels import CSF_INDEX, load_label_table
from ..training.labelled_scans import TrainingPair

# Dice points of one validation case's mean that are noise: between validations of a run at a steady quality the
# mean moves by up to about this much (docs/FINETUNING_RESULTS.md, issue 31).
KEEP_MARGIN = 0.005  # weights within this of the best score so far are as good: the later ones are kept
STOP_MARGIN = 0.005  # a validation this far below the base model's score is worse than it, not noise
STOP_AFTER = 0.5  # early stopping only in the second half of the planned steps


def _clean(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 4)



class ValidationMode(str, Enum):
    """Which case fine-tuning validates on; the value is what a new version's metadata records."""

    CHOSEN = "chosen case"
    LAST_PAIR = "last pair held out"
    TRAINING_CASE = "training case (no held-out case)"  # a single pair: optimistic, and no early stopping



class Validator:
    """Dice per structure on the validation pairs; remembers the best fine-tuned weights (in memory)."""

    def __init__(self, pairs: list[TrainingPair], device: torch.device):
        self.pairs, self.device, self.table = pairs, device, load_label_table()
        self.trainer = None  # the training loop (training.trainer.Trainer): its step names a validation
        # The weights kept: {"step", "state", "result", "top"}, "top" being the best score seen so far (see __call__)
        self.best: dict | None = None
        self.on_best: Callable[[dict], None] | None = None  # called with ``best`` whenever it changes
        self.seconds: list[float] = []  # duration of each validation, the one before training included
        self.base_score: float | None = None  # the base model's score (the validation before training)
        self.scores: list[float] = []  # every validation's score after step 0, in order

    def _indices(self, pair: TrainingPair) -> list[int]:
        # Scores against aseg leave out CSF and optic chiasm (aseg's CSF is not the structure the model calls CSF).
        wanted = self.table.scored_indices if pair.convention == "freesurfer" else range(1, self.table.num_classes)
        chosen = [i for i in wanted if i in pair.structures]
        return chosen or list(pair.structures)

    def evaluate(self, network) -> dict:
        started = time.perf_counter()
        try:
            return self._evaluate(network)
        finally:
            self.seconds.append(time.perf_counter() - started)

    def _evaluate(self, network) -> dict:
        was_training = network.training
        network.eval()
        per_case, means, scored = [], [], set()
        try:
            for pair in self.pairs:
                probabilities = predict_probabilities(network, pair.image[None], self.device)
                dice = dice_per_label(probabilities.argmax(0).numpy(), pair.labels.numpy(), self.table.num_classes)
                per_case.append(dice)
                means.append(float(np.nanmean([dice[i] for i in self._indices(pair)])))
                scored.update(self._indices(pair))
        finally:
            network.train(was_training)
        with np.errstate(all="ignore"):
            dice = np.nanmean(np.stack(per_case), axis=0) if len(per_case) > 1 else per_case[0]
        mean = float(np.mean(means))
        return {"score": mean, "mean": _clean(mean),
                "dice": {self.table.names[i]: _clean(dice[i]) for i in range(1, self.table.num_classes)},
                "scored": [self.table.names[i] for i in sorted(scored)]}  # the structures the mean is over

    def __call__(self, network) -> dict:
        """Validate; keep these weights when they score within KEEP_MARGIN of the best score so far.

        One case's Dice moves by about half a point between validations at the same quality, so the highest score
        is partly luck: an early lucky peak kept, and the rest of the run thrown away, is what cost a real site
        most of its gain (issue 31). Among weights as good as the best within that noise, the later ones (trained
        longer, at a lower learning rate) are kept."""
        result = self.evaluate(network)
        step = self.trainer.step if self.trainer else 0
        if step > 0:
            score = result["score"]
            self.scores.append(score)
            top = max(score, self.best.get("top", self.best["result"]["score"])) if self.best else score
            if self.best is None or score >= top - KEEP_MARGIN:
                self.best = {"step": step, "result": result, "top": top,
                             "state": {k: v.detach().to("cpu", copy=True) for k, v in network.state_dict().items()}}
                if self.on_best is not None:
                    self.on_best(self.best)
            else:
                self.best["top"] = top
        return {**result, "best_step": self.best["step"] if self.best else None,
                "best_mean": self.best["result"]["mean"] if self.best else None}

    def early_stop(self, step: int, planned: int, patience: int) -> str | None:
        """Why to stop now, or None. Only a run that keeps making the validation case worse than the base model
        stops early: its last ``patience`` validations all scored more than STOP_MARGIN below the base, and it is
        past STOP_AFTER of its planned steps. A dip below the best, or a flat curve, never stops it: the warm-up
        to the peak learning rate shakes the model for a while and the decaying rate brings it back."""
        if not patience or self.base_score is None or step < STOP_AFTER * planned or len(self.scores) < patience:
            return None
        recent = self.scores[-patience:]
        if all(score < self.base_score - STOP_MARGIN for score in recent):
            return (f"the last {patience} validations ({', '.join(f'{s:.3f}' for s in recent)}) all scored below the "
                    f"base model's {self.base_score:.3f}: fine-tuning is making the validation case worse")
        return None


def split_cases(config) -> tuple[list, list, ValidationMode, str]:
    """(training pairs, validation pairs, validation mode, what to tell the user) as file pairs."""
    pairs = [tuple(p) for p in config.pairs]
    if config.validation:
        return pairs, [tuple(config.validation)], ValidationMode.CHOSEN, \
            f"validation: {Path(config.validation[0]).name} (chosen)"
    if len(pairs) >= 2:
        return pairs[:-1], pairs[-1:], ValidationMode.LAST_PAIR, \
            f"validation: {Path(pairs[-1][0]).name} held out (the last pair); training on the other {len(pairs) - 1}"
    return pairs, pairs, ValidationMode.TRAINING_CASE, (
        "validation: a single pair and no validation case, so Dice is measured on the training case itself "
        "(optimistic) and early stopping is off; give a validation case for an honest score")



def focus_masks(network, pairs: list[TrainingPair], device: torch.device) -> list[torch.Tensor]:
    """Per training pair, the voxels where the base model's label differs from the site's (on the network grid).

    FreeSurfer's aseg leaves sulcal and extra-cerebral CSF at 0, where the model says CSF: on a FreeSurfer-labelled
    proxy case 62 % of the disagreeing voxels, a difference of convention that no score counts (CSF is not scored
    against aseg). Centring patches there spent the fine-tune on it; for aseg pairs, CSF against
    background is therefore not a disagreement (issue 31)."""
    was_training = network.training
    network.eval()
    masks = []
    try:
        for pair in pairs:
            predicted = predict_probabilities(network, pair.image[None], device).argmax(0)
            mask = predicted != pair.labels
            if pair.convention == "freesurfer":
                unscored = (0, CSF_INDEX)
                mask &= ~(torch.isin(predicted, torch.tensor(unscored)) & torch.isin(pair.labels, torch.tensor(unscored)))
            masks.append(mask)
    finally:
        network.train(was_training)
    return masks
