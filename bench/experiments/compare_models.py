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

from held_out import WATCH, held_out_dice
from SegLossBrainLib.labels import load_label_table
from SegLossBrainLib.models.files import load_model
from SegLossBrainLib.paths import BRAIN_LABEL_MAPS, HELD_OUT_BRAIN_MAPS, HELD_OUT_MAPS, data_dir, label_maps_dir
from SegLossBrainLib.synthesis.composite_heads import composite_sources


def score_models(paths: list[str], draws: int, seed: int, threads: int, device: str = "cpu",
                 maps: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Dice [model, image, class] on the same synthetic images for every model."""
    torch.set_num_threads(threads)
    table = load_label_table()
    networks = []
    for path in paths:
        network, _ = load_model(path)
        networks.append(network.eval().to(device))

    def segment(image):
        with torch.inference_mode():
            image = image.to(device)
            return {m: network(image[None]).argmax(dim=1)[0].cpu().numpy() for m, network in enumerate(networks)}

    scores = held_out_dice(segment, draws, seed, maps=maps)
    return np.stack([scores[m] for m in range(len(networks))]), table.names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="the first is the baseline")
    parser.add_argument("--draws", type=int, default=12, help="images per held-out map")
    parser.add_argument("--seed", type=int, default=555)  # not training's VALIDATION_SEED
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fs-maps", action="store_true",
                        help="score on the brain-only FreeSurfer-convention maps held out of training "
                             "(paths.HELD_OUT_BRAIN_MAPS) instead of the full-head maps 19-20")
    parser.add_argument("--composite-heads", action="store_true",
                        help="score on skull-on heads drawn FreeSurfer's way: each held-out brain-only map placed "
                             "inside each held-out full-head map (synthesis/composite_heads.py), 4 heads")
    args = parser.parse_args()
    if len(args.models) < 2:
        parser.error("give a baseline and at least one candidate")
    maps = [str(data_dir() / BRAIN_LABEL_MAPS / name) for name in HELD_OUT_BRAIN_MAPS] if args.fs_maps else None
    if args.composite_heads:
        brains = [str(data_dir() / BRAIN_LABEL_MAPS / name) for name in HELD_OUT_BRAIN_MAPS]
        heads = [str(label_maps_dir() / name) for name in HELD_OUT_MAPS]
        maps = composite_sources(brains, heads, per_brain=len(heads))
    dice, names = score_models(args.models, args.draws, args.seed, args.threads, args.device, maps)
    table = load_label_table()
    mean17 = np.nanmean(dice[:, :, table.scored_indices], axis=2)  # [model, image]
    watch = [names.index(n) for n in WATCH]
    which = ("FreeSurfer-convention composite skull-on" if args.composite_heads
             else "FreeSurfer-convention brain-only" if args.fs_maps else "full-head")
    print(f"\n{dice.shape[1]} held-out synthetic images from {which} maps (seed {args.seed}); "
          f"baseline {Path(args.models[0]).name}")
    print("| model | mean Dice (17) | paired diff ± s.e. | images better | " + " | ".join(WATCH) + " |")
    print("|---|---|---|---|" + "---|" * len(WATCH))
    for m, path in enumerate(args.models):
        diff = mean17[m] - mean17[0]
        se = diff.std(ddof=1) / np.sqrt(len(diff)) if m else 0.0
        per = np.nanmean(dice[m], axis=0)
        print(f"| {Path(path).parent.name}/{Path(path).name} | {mean17[m].mean():.4f} | {diff.mean():+.4f} ± {se:.4f} | "
              f"{int((diff > 0).sum())}/{len(diff)} | " + " | ".join(f"{per[i]:.4f}" for i in watch) + " |")


if __name__ == "__main__":
    main()
