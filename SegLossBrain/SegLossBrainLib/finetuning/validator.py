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
from ..labels import load_label_table
from ..training.labelled_scans import TrainingPair


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
        self.best: dict | None = None  # {"step", "state", "result"}
        self.on_best: Callable[[dict], None] | None = None  # called with ``best`` whenever it changes
        self.seconds: list[float] = []  # duration of each validation, the one before training included

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
        result = self.evaluate(network)
        step = self.trainer.step if self.trainer else 0
        if step > 0 and (self.best is None or result["score"] > self.best["result"]["score"]):
            self.best = {"step": step, "result": result,
                         "state": {k: v.detach().to("cpu", copy=True) for k, v in network.state_dict().items()}}
            if self.on_best is not None:
                self.on_best(self.best)
        return {**result, "best_step": self.best["step"] if self.best else None,
                "best_mean": self.best["result"]["mean"] if self.best else None}


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
    """Per training pair, the voxels where the base model's label differs from the site's (on the network grid)."""
    was_training = network.training
    network.eval()
    masks = []
    try:
        for pair in pairs:
            predicted = predict_probabilities(network, pair.image[None], device).argmax(0)
            masks.append(predicted != pair.labels)
    finally:
        network.train(was_training)
    return masks
