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

from SegLossBrainLib.preprocessing import grid as grids
from SegLossBrainLib.inference.segment import predict_probabilities
from SegLossBrainLib.labels import load_label_table
from SegLossBrainLib.evaluation.metrics import dice_per_label
from SegLossBrainLib.models.files import load_model
from SegLossBrainLib.resources import shipped_models_dir
from SegLossBrainLib.synthesis.generator import SynthesisSettings, SyntheticBrainGenerator

ROOT = Path(__file__).resolve().parents[2]
MAPS = ROOT.parent / "shared" / "data" / "synthseg_label_maps"
HELD_OUT = ("training_seg_19.nii.gz", "training_seg_20.nii.gz")
WATCH = ("inferior lateral ventricle", "accumbens", "3rd ventricle", "4th ventricle", "amygdala")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(shipped_models_dir() / "wong2018-explog.safetensors"))
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
    settings = SynthesisSettings(patch_size=(176, 208, 176), spacing_mm=1.0)
    generator = SyntheticBrainGenerator([str(MAPS / m) for m in HELD_OUT], settings)
    rng = torch.Generator().manual_seed(args.seed)
    scores = {s: [] for s in spacings}
    seconds = {s: 0.0 for s in spacings}
    for draw in range(args.draws):
        for source in range(len(HELD_OUT)):
            tensor, target = generator.sample(rng, source_index=source)
            image = sitk.GetImageFromArray(tensor[0].numpy())  # 1 mm, identity direction
            for spacing in spacings:
                start = time.perf_counter()
                grid = grids.plan_network_grid(image, spacing)
                probabilities = predict_probabilities(network, grids.to_network(image, grid), torch.device("cpu"))
                labels, _ = grids.probabilities_to_image(probabilities, grid, image, False)
                seconds[spacing] += time.perf_counter() - start
                scores[spacing].append(dice_per_label(sitk.GetArrayFromImage(labels), target.numpy(), table.num_classes))
        print(f"draw {draw + 1}/{args.draws} done", flush=True)
    count = args.draws * len(HELD_OUT)
    print(f"\n{count} held-out synthetic 1 mm images (seed {args.seed}), model {Path(args.model).name}")
    print("| grid spacing (mm) | s/image | mean Dice (17) | " + " | ".join(WATCH) + " |")
    print("|---|---|---|" + "---|" * len(WATCH))
    for spacing in spacings:
        dice = np.array(scores[spacing])
        per = np.nanmean(dice, axis=0)
        mean17 = np.nanmean(dice[:, table.scored_indices], axis=1)
        print(f"| {spacing:g} | {seconds[spacing] / count:.1f} | {mean17.mean():.4f} | "
              + " | ".join(f"{per[table.names.index(n)]:.4f}" for n in WATCH) + " |")
    base = np.nanmean(np.array(scores[spacings[0]])[:, table.scored_indices], axis=1)
    for spacing in spacings[1:]:
        diff = np.nanmean(np.array(scores[spacing])[:, table.scored_indices], axis=1) - base
        print(f"{spacing:g} mm minus {spacings[0]:g} mm: {diff.mean():+.4f} ± {diff.std(ddof=1) / np.sqrt(len(diff)):.4f} "
              f"(s.e.), better on {int((diff > 0).sum())}/{len(diff)} images")


if __name__ == "__main__":
    main()
