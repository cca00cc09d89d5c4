"""The range of each structure's volume relative to intracranial volume in real heads, from the 20 training label
maps (SynthSeg's, 20 real subjects), written as the table the output QC reads.

    python bench/release/volume_ranges.py [--out Resources/SegLossBrainVolumeRanges.csv]

Per map: aseg values merged to the 19 structures, each structure's voxel count over the sum of all 19 (the
engine's intracranial volume, ``evaluation.volumes.intracranial_volume_ml``). The table keeps the minimum and
maximum over the 20 maps and the flag limits: that range widened by a factor 1.5 each way (minimum / 1.5, maximum
x 1.5; volumes vary by ratios, and 20 heads do not span every healthy head: a flag should mean "look", not "a head
slightly outside these 20").
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SegLossBrainLib.labels import load_label_table
from SegLossBrainLib.paths import label_maps_dir

ROOT = Path(__file__).resolve().parents[2]
WIDEN = 1.5  # factor beyond the observed minimum and maximum


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "Resources" / "SegLossBrainVolumeRanges.csv"))
    args = parser.parse_args()
    table = load_label_table()
    maps = sorted(label_maps_dir().glob("training_seg_*.nii.gz"))
    fractions = []
    for path in maps:
        merged = table.map_freesurfer(sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.int64))
        counts = np.bincount(merged.ravel(), minlength=table.num_classes)[1:].astype(float)
        fractions.append(counts / counts.sum())
    fractions = np.array(fractions)
    low, high = fractions.min(axis=0), fractions.max(axis=0)
    with open(args.out, "w", newline="") as out:
        out.write(f"# Structure volume / intracranial volume over the {len(maps)} SynthSeg training label maps "
                  "(bench/release/volume_ranges.py); QC flags outside flag_low..flag_high (observed minimum / "
                  f"{WIDEN:g}, maximum x {WIDEN:g})\n")
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["structure", "observed_min", "observed_max", "flag_low", "flag_high"])
        for index, structure in enumerate(table.structures[1:]):
            writer.writerow([structure.name, f"{low[index]:.6f}", f"{high[index]:.6f}",
                             f"{low[index] / WIDEN:.6f}", f"{high[index] * WIDEN:.6f}"])
    print(f"{len(maps)} maps -> {args.out}")
    for index, structure in enumerate(table.structures[1:]):
        print(f"  {structure.name:28s} {100 * low[index]:7.3f} .. {100 * high[index]:7.3f} % of ICV")


if __name__ == "__main__":
    main()
