"""Choose the island-removal threshold on held-out SYNTHETIC brains only (never the real dev scans).

    python bench/experiments/island_choice.py [--model PATH] [--draws 4] [--fractions 0,0.02,0.05,0.1,0.2,0.3]

Draws whole-brain synthetic images (112x144x112 at 1.5 mm) from the two held-out label maps, runs the network
once per draw, and scores each threshold on the same probabilities: mean Dice over the 17 scored structures
and the Dice of the weakest ones. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from held_out import SHIPPED_MODEL, held_out_dice
from SegLossBrainLib.labels import load_label_table
from SegLossBrainLib.models.files import load_model
from SegLossBrainLib.paths import HELD_OUT_MAPS
from SegLossBrainLib.postprocessing.islands import suppress_islands

WATCH = ("inferior lateral ventricle", "accumbens", "3rd ventricle", "4th ventricle", "optic chiasm")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(SHIPPED_MODEL))
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--fractions", default="0,0.02,0.05,0.1,0.2,0.3")
    parser.add_argument("--seed", type=int, default=555)  # not the training validation seed
    args = parser.parse_args()
    fractions = [float(v) for v in args.fractions.split(",")]
    table = load_label_table()
    network, _ = load_model(args.model)
    network.eval()

    def segment(image):
        with torch.inference_mode():
            probabilities = torch.softmax(network(image[None]).float(), dim=1)[0]
        return {f: suppress_islands(probabilities, f).argmax(dim=0).numpy() for f in fractions}

    scores = held_out_dice(segment, args.draws, args.seed)
    print(f"{args.draws} draws x {len(HELD_OUT_MAPS)} held-out maps, model {Path(args.model).name}")
    print("| min_fraction | mean Dice (17) | " + " | ".join(WATCH) + " |")
    print("|---|---|" + "---|" * len(WATCH))
    for fraction in fractions:
        dice = np.nanmean(scores[fraction], axis=0)
        mean17 = float(np.mean([dice[i] for i in table.scored_indices]))
        print(f"| {fraction:g} | {mean17:.4f} | "
              + " | ".join(f"{dice[table.names.index(n)]:.4f}" for n in WATCH) + " |")


if __name__ == "__main__":
    main()
