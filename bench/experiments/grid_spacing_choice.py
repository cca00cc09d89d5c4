"""Which network-grid spacing to segment at, measured on held-out SYNTHETIC brains drawn at 1 mm.

    python bench/experiments/grid_spacing_choice.py [--model PATH] [--spacings 1.5,1.25] [--draws 4]

The network is trained at 1.5 mm with anatomy scaled by 0.8-1.2, i.e. it has seen structures at 1.25-1.9 mm
per voxel. Segmenting on a finer grid could recover thin structures (the inferior lateral ventricle is 1-3 mm
wide) at the cost of (1.5/s)^3 more voxels. This draws 1 mm images with 1 mm targets from the two held-out label
maps, runs the whole inference path (resample to the grid, network, probabilities back to the 1 mm grid) at each
spacing and scores Dice at 1 mm. The real dev scans are not used to choose.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from held_out import SHIPPED_MODEL, WATCH, held_out_dice
from SegLossBrainLib.inference.segment import predict_probabilities
from SegLossBrainLib.labels import load_label_table
from SegLossBrainLib.models.files import load_model
from SegLossBrainLib.paths import HELD_OUT_MAPS
from SegLossBrainLib.preprocessing import grid as grids
from SegLossBrainLib.synthesis.generator import SynthesisSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(SHIPPED_MODEL))
    parser.add_argument("--spacings", default="1.5,1.25")
    parser.add_argument("--draws", type=int, default=4, help="images per held-out map")
    parser.add_argument("--seed", type=int, default=777)  # not training's VALIDATION_SEED
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spacings = [float(v) for v in args.spacings.split(",")]
    table = load_label_table()
    network, _ = load_model(args.model)
    network.eval()
    seconds = {s: 0.0 for s in spacings}

    def segment(tensor):
        image = sitk.GetImageFromArray(tensor[0].numpy())  # 1 mm, identity direction
        labels = {}
        for spacing in spacings:
            start = time.perf_counter()
            grid = grids.plan_network_grid(image, spacing)
            probabilities = predict_probabilities(network, grids.to_network(image, grid), torch.device("cpu"))
            labels[spacing] = sitk.GetArrayFromImage(grids.probabilities_to_image(probabilities, grid, image, False)[0])
            seconds[spacing] += time.perf_counter() - start
        return labels

    scores = held_out_dice(segment, args.draws, args.seed, SynthesisSettings(patch_size=(176, 208, 176), spacing_mm=1.0))
    count = args.draws * len(HELD_OUT_MAPS)
    print(f"\n{count} held-out synthetic 1 mm images (seed {args.seed}), model {Path(args.model).name}")
    print("| grid spacing (mm) | s/image | mean Dice (17) | " + " | ".join(WATCH) + " |")
    print("|---|---|---|" + "---|" * len(WATCH))
    for spacing in spacings:
        dice = scores[spacing]
        per = np.nanmean(dice, axis=0)
        mean17 = np.nanmean(dice[:, table.scored_indices], axis=1)
        print(f"| {spacing:g} | {seconds[spacing] / count:.1f} | {mean17.mean():.4f} | "
              + " | ".join(f"{per[table.names.index(n)]:.4f}" for n in WATCH) + " |")
    base = np.nanmean(scores[spacings[0]][:, table.scored_indices], axis=1)
    for spacing in spacings[1:]:
        diff = np.nanmean(scores[spacing][:, table.scored_indices], axis=1) - base
        print(f"{spacing:g} mm minus {spacings[0]:g} mm: {diff.mean():+.4f} ± {diff.std(ddof=1) / np.sqrt(len(diff)):.4f} "
              f"(s.e.), better on {int((diff > 0).sum())}/{len(diff)} images")


if __name__ == "__main__":
    main()
