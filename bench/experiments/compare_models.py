"""Compare candidate weights on held-out SYNTHETIC brains, paired, before choosing which to ship.

    python bench/experiments/compare_models.py BASELINE.safetensors CANDIDATE.safetensors [MORE ...] [--draws 12]

Every model segments the same whole-brain synthetic images (112x144x112 at 1.5 mm, drawn from the two label
maps held out of training with a seed that is not the training-validation seed), so the differences are paired:
per image, candidate minus baseline. The training run's own "best" is chosen on only two images, which is too few
to ship on; this gives the mean over 2 x draws images, its standard error and how many images got better.
The real dev scans are deliberately not used here (they stay an honest check, see the model card).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from SegLossBrainLib.labels import load_label_table
from SegLossBrainLib.evaluation.metrics import dice_per_label
from SegLossBrainLib.models.files import load_model
from SegLossBrainLib.synthesis.generator import SynthesisSettings, SyntheticBrainGenerator

ROOT = Path(__file__).resolve().parents[2]
MAPS = ROOT.parent / "shared" / "data" / "synthseg_label_maps"
HELD_OUT = ("training_seg_19.nii.gz", "training_seg_20.nii.gz")
WATCH = ("inferior lateral ventricle", "accumbens", "3rd ventricle", "4th ventricle", "amygdala")


def score_models(paths: list[str], draws: int, seed: int, threads: int) -> tuple[np.ndarray, list[str]]:
    """Dice [model, image, class] on the same synthetic images for every model."""
    torch.set_num_threads(threads)
    table = load_label_table()
    networks = []
    for path in paths:
        network, _ = load_model(path)
        networks.append(network.eval())
    generator = SyntheticBrainGenerator([str(MAPS / m) for m in HELD_OUT], SynthesisSettings(patch_size=(112, 144, 112)))
    rng = torch.Generator().manual_seed(seed)
    dice = []
    for draw in range(draws):
        for source in range(len(HELD_OUT)):
            image, target = generator.sample(rng, source_index=source)
            row = []
            for network in networks:
                with torch.inference_mode():
                    labels = network(image[None]).argmax(dim=1)[0].numpy()
                row.append(dice_per_label(labels, target.numpy(), table.num_classes))
            dice.append(row)
        print(f"draw {draw + 1}/{draws} done", flush=True)
    return np.array(dice).transpose(1, 0, 2), table.names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="the first is the baseline")
    parser.add_argument("--draws", type=int, default=12, help="images per held-out map")
    parser.add_argument("--seed", type=int, default=555)  # not training's VALIDATION_SEED
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if len(args.models) < 2:
        parser.error("give a baseline and at least one candidate")
    dice, names = score_models(args.models, args.draws, args.seed, args.threads)
    table = load_label_table()
    mean17 = np.nanmean(dice[:, :, table.scored_indices], axis=2)  # [model, image]
    watch = [names.index(n) for n in WATCH]
    print(f"\n{dice.shape[1]} held-out synthetic images (seed {args.seed}); baseline {Path(args.models[0]).name}")
    print("| model | mean Dice (17) | paired diff ± s.e. | images better | " + " | ".join(WATCH) + " |")
    print("|---|---|---|---|" + "---|" * len(WATCH))
    for m, path in enumerate(args.models):
        diff = mean17[m] - mean17[0]
        se = diff.std(ddof=1) / np.sqrt(len(diff)) if m else 0.0
        per = np.nanmean(dice[m], axis=0)
        print(f"| {Path(path).name} | {mean17[m].mean():.4f} | {diff.mean():+.4f} ± {se:.4f} | "
              f"{int((diff > 0).sum())}/{len(diff)} | " + " | ".join(f"{per[i]:.4f}" for i in watch) + " |")


if __name__ == "__main__":
    main()
