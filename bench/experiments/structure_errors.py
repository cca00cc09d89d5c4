"""Where one structure's errors are: boundary or whole pieces, and how big the structure is in the training maps.

    python bench/experiments/structure_errors.py --structure "inferior lateral ventricle" \
        --pair SEGMENTATION,ASEG [--pair ...]

SEGMENTATION is a `seglossbrain segment` output (structure indices), ASEG a FreeSurfer aseg of the same scan
(mapped with the label table). For each pair: reference and predicted voxel counts, Dice, false positives that
touch the reference (within one voxel: a boundary disagreement) and those that do not (extra pieces), likewise
for false negatives, and the connected pieces on each side. Then the structure's volume in the 20 training label
maps, relative to the hippocampus, to see whether the scan's anatomy is within what the network was trained on.
A diagnostic for the model card, not a way to choose anything.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from SegLossBrainLib.labels import load_label_table
from SegLossBrainLib.paths import LABEL_MAPS, find_data_dir


def volume_ratio(indices: np.ndarray, structure: int, relative_to: int) -> tuple[int, float]:
    counts = np.bincount(indices.ravel(), minlength=max(structure, relative_to) + 1)
    return int(counts[structure]), float(counts[structure] / max(counts[relative_to], 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structure", default="inferior lateral ventricle")
    parser.add_argument("--relative-to", default="hippocampus")
    parser.add_argument("--pair", action="append", default=[], help="SEGMENTATION,ASEG")
    args = parser.parse_args()
    table = load_label_table()
    index, other = table.names.index(args.structure), table.names.index(args.relative_to)
    print(f"| scan | reference voxels | predicted | Dice | FP touching ref | FP apart | FN touching pred | FN apart "
          f"| pieces ref / pred | {args.structure} / {args.relative_to} |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for pair in args.pair:
        seg_path, aseg_path = pair.split(",")
        predicted = np.asanyarray(nib.load(seg_path).dataobj) == index
        reference_indices = table.map_freesurfer(np.asanyarray(nib.load(aseg_path).dataobj))
        reference = reference_indices == index
        false_pos, false_neg = predicted & ~reference, reference & ~predicted
        fp_touch = int((false_pos & ndimage.binary_dilation(reference)).sum())
        fn_touch = int((false_neg & ndimage.binary_dilation(predicted)).sum())
        dice = 2 * (predicted & reference).sum() / max(predicted.sum() + reference.sum(), 1)
        pieces = (ndimage.label(reference)[1], ndimage.label(predicted)[1])
        _, ratio = volume_ratio(reference_indices, index, other)
        print(f"| {Path(seg_path).name} | {reference.sum()} | {predicted.sum()} | {dice:.3f} | {fp_touch} | "
              f"{false_pos.sum() - fp_touch} | {fn_touch} | {false_neg.sum() - fn_touch} | {pieces[0]} / {pieces[1]} "
              f"| {ratio:.3f} |")
    data = find_data_dir()
    maps = sorted((data / LABEL_MAPS).glob("training_seg_*.nii.gz")) if data else []
    if maps:
        stats = np.array([volume_ratio(table.map_freesurfer(np.asanyarray(nib.load(m).dataobj)), index, other)
                          for m in maps])
        print(f"\ntraining maps ({len(maps)}, 1 mm): {args.structure} voxels median {np.median(stats[:, 0]):.0f} "
              f"(range {stats[:, 0].min():.0f}-{stats[:, 0].max():.0f}); / {args.relative_to} median "
              f"{np.median(stats[:, 1]):.3f} (range {stats[:, 1].min():.3f}-{stats[:, 1].max():.3f})")


if __name__ == "__main__":
    main()
