"""Does a model draw the same structures with and without the skull? Real skull-on scans, no labels needed.

    python bench/experiments/skull_agreement.py BASE.safetensors CAND.safetensors [...]

The unlabelled real dev scans that still have their skull (MNE's sample T1, brainchop's T1) are segmented as they
are, then skull-stripped and segmented again. The stripping mask is the first model's own brain (its 18 brain
structures and CSF, closed and dilated by 3 mm), the same mask for every model, so the stripped images are the
same for all. Per structure, the Dice between the two segmentations says how much a model's drawing depends on
the skull: a model that learnt FreeSurfer's convention only from skull-stripped images draws small structures
one way with the skull and another without it. Nothing here says which of the two drawings is right.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from SegLossBrainLib.evaluation.metrics import dice_per_label
from SegLossBrainLib.inference.segment import segment
from SegLossBrainLib.labels import load_label_table
from SegLossBrainLib.models.files import load_model
from SegLossBrainLib.paths import REAL_DEV, data_dir

SKULL_ON_SCANS = ("mne_sample_T1_skull_unlabeled.nii.gz", "brainchop_t1_crop_unlabeled.nii.gz")
SMALL = ("inferior lateral ventricle", "pallidum", "accumbens", "3rd ventricle", "4th ventricle", "amygdala")


def stripped(image: sitk.Image, labels: sitk.Image) -> sitk.Image:
    """``image`` with everything outside ``labels``' brain and CSF (closed, dilated by 3 mm) set to 0."""
    brain = sitk.Cast(labels > 0, sitk.sitkUInt8)
    radius = [max(1, int(round(3.0 / s))) for s in image.GetSpacing()]
    mask = sitk.BinaryDilate(sitk.BinaryFillhole(sitk.BinaryMorphologicalClosing(brain, radius)), radius)
    return sitk.Mask(image, mask, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="the first one's brain makes the stripping mask")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = load_label_table()
    networks = [load_model(m)[0].eval() for m in args.models]
    small = [table.index_of(name) for name in SMALL]
    rows = {}
    for scan in SKULL_ON_SCANS:
        image = sitk.Cast(sitk.ReadImage(str(data_dir() / REAL_DEV / scan)), sitk.sitkFloat32)
        with_skull = [segment(image, model=network).labels for network in networks]
        without = stripped(image, with_skull[0])
        for m, network in enumerate(networks):
            a = sitk.GetArrayFromImage(with_skull[m])
            b = sitk.GetArrayFromImage(segment(without, model=network).labels)
            dice = dice_per_label(a, b, table.num_classes)
            rows[(args.models[m], scan)] = dice
            print(f"{scan} {Path(args.models[m]).name}: mean of 17 {np.nanmean(dice[table.scored_indices]):.4f}, "
                  + ", ".join(f"{table.names[i]} {dice[i]:.3f}" for i in small), flush=True)
    print("\nDice between the skull-on and skull-stripped segmentations of the same scan\n")
    print("| model | scan | mean of 17 | " + " | ".join(SMALL) + " |")
    print("|---|---|---|" + "---|" * len(SMALL))
    for (model, scan), dice in rows.items():
        print(f"| {Path(model).parent.name}/{Path(model).name} | {scan.split('_')[0]} | "
              f"{np.nanmean(dice[table.scored_indices]):.4f} | " + " | ".join(f"{dice[i]:.3f}" for i in small) + " |")


if __name__ == "__main__":
    main()
