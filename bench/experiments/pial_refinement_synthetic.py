"""Does the cortex boundary refinement keep synthetic whole heads (skull on) as good? Paired, on and off.

    python bench/experiments/pial_refinement_synthetic.py [--draws 6] [--seed 555] [--fs-maps]

Synthetic images are drawn at 1 mm (the input resolution the refinement works at; the network still sees
1.5 mm) from the label maps held out of training: the full-head maps 19-20 (skull, scalp and neck around the
brain: the skull-on case) or, with ``--fs-maps``, the two brain-only FreeSurfer-convention maps. Each image is
segmented by ``segment`` once with and once without the refinement, from the same network probabilities, and
scored against its own label map: mean Dice over the 17 scored structures, cortex and cerebellar cortex.
"""
from __future__ import annotations

import argparse

import numpy as np
import SimpleITK as sitk
import torch

from SegLossBrainLib.evaluation.metrics import dice_per_label
from SegLossBrainLib.inference.segment import segment
from SegLossBrainLib.labels import load_label_table
from SegLossBrainLib.paths import BRAIN_LABEL_MAPS, HELD_OUT_BRAIN_MAPS, HELD_OUT_MAPS, data_dir, label_maps_dir
from SegLossBrainLib.resources import shipped_models_dir
from SegLossBrainLib.models.store import DEFAULT_MODEL_NAME
from SegLossBrainLib.synthesis.generator import SynthesisSettings, SyntheticBrainGenerator

SIZE_1MM = (176, 224, 176)  # the whole brain and the head around it at 1 mm (multiples of 16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(shipped_models_dir() / f"{DEFAULT_MODEL_NAME}.safetensors"))
    parser.add_argument("--draws", type=int, default=6, help="images per held-out map")
    parser.add_argument("--seed", type=int, default=555)
    parser.add_argument("--fs-maps", action="store_true")
    args = parser.parse_args()
    table = load_label_table()
    maps = ([str(data_dir() / BRAIN_LABEL_MAPS / n) for n in HELD_OUT_BRAIN_MAPS] if args.fs_maps
            else [str(label_maps_dir() / n) for n in HELD_OUT_MAPS])
    generator = SyntheticBrainGenerator(maps, SynthesisSettings(patch_size=SIZE_1MM, spacing_mm=1.0))
    rng = torch.Generator().manual_seed(args.seed)
    scored = list(table.scored_indices)
    rows = []
    for draw in range(args.draws):
        for source in range(len(maps)):
            image, target = generator.sample(rng, source_index=source)
            volume = sitk.GetImageFromArray(image[0].numpy().astype(np.float32))  # spacing 1 mm, identity axes
            result = {}
            for refine in (False, True):
                labels = sitk.GetArrayFromImage(segment(volume, model=args.model, device="cpu",
                                                        pial_refinement=refine).labels)
                result[refine] = dice_per_label(labels, target.numpy(), table.num_classes)
            off, on = result[False], result[True]
            rows.append((np.nanmean(off[scored]), np.nanmean(on[scored]), off[2], on[2], off[6], on[6]))
            print(f"draw {draw + 1} map {source + 1}: mean17 {rows[-1][0]:.4f} -> {rows[-1][1]:.4f}, cortex "
                  f"{off[2]:.3f} -> {on[2]:.3f}, cerebellar cortex {off[6]:.3f} -> {on[6]:.3f}", flush=True)
    rows = np.array(rows)
    diff = 100 * (rows[:, 1] - rows[:, 0])
    kind = "brain-only FreeSurfer-convention" if args.fs_maps else "full-head (skull on)"
    print(f"\n{len(rows)} synthetic 1 mm images from the held-out {kind} maps (seed {args.seed})")
    print("| | network boundary | + pial refinement | paired difference (points) | images better |")
    print("|---|---|---|---|---|")
    print(f"| mean Dice (17) | {rows[:, 0].mean():.4f} | {rows[:, 1].mean():.4f} | "
          f"{diff.mean():+.2f} ± {diff.std(ddof=1) / np.sqrt(len(diff)):.2f} | {(diff > 0).sum()}/{len(diff)} |")
    for name, a, b in (("cerebral cortex", 2, 3), ("cerebellum cortex", 4, 5)):
        d = 100 * (rows[:, b] - rows[:, a])
        print(f"| {name} | {rows[:, a].mean():.4f} | {rows[:, b].mean():.4f} | "
              f"{d.mean():+.2f} ± {d.std(ddof=1) / np.sqrt(len(d)):.2f} | {(d > 0).sum()}/{len(d)} |")


if __name__ == "__main__":
    main()
