"""The held-out Dice loop the decision experiments share (compare_models, island_choice, grid_spacing_choice).

Whole-brain synthetic images are drawn from the label maps held out of training (``paths.HELD_OUT_MAPS``; never
the real dev scans, which stay an honest check), every contender segments the same images, and each is scored
per structure: differences between contenders are paired. Use a seed other than training's VALIDATION_SEED, so
that a choice is not made on the images a run chose its best checkpoint on.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from SegLossBrainLib.evaluation.metrics import dice_per_label
from SegLossBrainLib.labels import load_label_table
from SegLossBrainLib.models.store import DEFAULT_MODEL_NAME
from SegLossBrainLib.paths import HELD_OUT_MAPS, VALIDATION_SIZE, label_maps_dir
from SegLossBrainLib.resources import shipped_models_dir

SHIPPED_MODEL = shipped_models_dir() / f"{DEFAULT_MODEL_NAME}.safetensors"
# the small structures a change is most likely to help or hurt
WATCH = ("inferior lateral ventricle", "accumbens", "3rd ventricle", "4th ventricle", "amygdala")


def held_out_dice(segment: Callable[[torch.Tensor], dict], draws: int, seed: int, settings=None,
                  maps: list[str] | None = None) -> dict:
    """``segment(image)`` gets each synthetic image ([1, D, H, W], the target's grid) and returns
    {contender: labels [D, H, W]}; the result is {contender: Dice [image, class]} over ``draws`` images per
    held-out map (draw by draw, map by map). ``settings``: SynthesisSettings, default the whole brain at 1.5 mm;
    ``maps``: label map paths (or generator sources), default the full-head maps held out of training (``paths.HELD_OUT_MAPS``)."""
    from SegLossBrainLib.synthesis.generator import SynthesisSettings, SyntheticBrainGenerator

    table = load_label_table()
    maps = maps or [str(label_maps_dir() / name) for name in HELD_OUT_MAPS]
    generator = SyntheticBrainGenerator(maps, settings or SynthesisSettings(patch_size=VALIDATION_SIZE))
    rng = torch.Generator().manual_seed(seed)
    scores: dict = {}
    for draw in range(draws):
        for source in range(len(maps)):
            image, target = generator.sample(rng, source_index=source)
            for contender, labels in segment(image).items():
                scores.setdefault(contender, []).append(
                    dice_per_label(np.asarray(labels), target.numpy(), table.num_classes))
        print(f"draw {draw + 1}/{draws} done", flush=True)
    return {contender: np.array(values) for contender, values in scores.items()}
