"""1 mm labels from 5 mm slices: ``--output-spacing 1`` against nearest-neighbour upsampling of the thick-grid
labels, scored against the 1 mm FreeSurfer aseg of the real dev scans (needs the data folder).

    python bench/experiments/thick_slices.py [--model PATH] [--thickness 5]

Each dev scan is cropped to a whole number of thick slices along its axis closest to superior (so the 1 mm grid
of ``--output-spacing 1`` falls exactly on the original voxels) and its slices averaged in groups of 5 (a thick
axial acquisition: partial volume within the slice). Three results per scan, all on the cropped 1 mm grid: the 1 mm
scan itself, the thick scan segmented with ``output_spacing=1``, and the thick scan segmented on its own grid then
upsampled by nearest neighbour. Mean Dice over the 17 scored structures; prints a Markdown table.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SegLossBrainLib.evaluation.metrics import dice_per_label
from SegLossBrainLib.imageio.volumes import same_grid
from SegLossBrainLib.inference.segment import segment
from SegLossBrainLib.labels import load_label_table
from SegLossBrainLib.paths import REAL_DEV, REAL_DEV_SCANS, data_dir
from SegLossBrainLib.preprocessing.grid import closest_axes
from SegLossBrainLib.resources import shipped_models_dir


def thick_version(image: sitk.Image, aseg: sitk.Image, thickness: int):
    """(cropped 1 mm image, cropped aseg, thick-slice image) along the axis closest to superior."""
    permutation, _ = closest_axes(image.GetDirection())
    axis = int(permutation[2])
    keep = image.GetSize()[axis] // thickness * thickness
    upper = [0, 0, 0]
    upper[axis] = image.GetSize()[axis] - keep
    cropped, cropped_aseg = sitk.Crop(image, [0, 0, 0], upper), sitk.Crop(aseg, [0, 0, 0], upper)
    shrink = [1, 1, 1]
    shrink[axis] = thickness
    return cropped, cropped_aseg, sitk.BinShrink(sitk.Cast(cropped, sitk.sitkFloat32), shrink)


def mean_dice(labels: sitk.Image, reference: np.ndarray, table) -> float:
    dice = dice_per_label(sitk.GetArrayViewFromImage(labels), reference, table.num_classes)
    return float(np.mean([dice[i] for i in table.scored_indices]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(shipped_models_dir() / "wong2018-explog.safetensors"))
    parser.add_argument("--thickness", type=int, default=5)
    args = parser.parse_args()
    table = load_label_table()
    print(f"model {Path(args.model).name}, {args.thickness} mm slices; mean Dice (17 structures) vs the 1 mm aseg")
    print("| scan | 1 mm scan | thick, --output-spacing 1 | thick labels, nearest-neighbour upsampled |")
    print("|---|---|---|---|")
    for case, image_file, aseg_file in REAL_DEV_SCANS:
        folder = data_dir() / REAL_DEV
        image, aseg, thick = thick_version(sitk.ReadImage(str(folder / image_file)),
                                           sitk.ReadImage(str(folder / aseg_file)), args.thickness)
        reference = table.map_freesurfer(sitk.GetArrayFromImage(aseg).astype(np.int64))
        fine = segment(image, model=args.model, device="cpu").labels
        from_thick = segment(thick, model=args.model, device="cpu", output_spacing=1.0).labels
        assert same_grid(from_thick, aseg), "the 1 mm output grid should fall on the cropped scan's voxels"
        on_thick = segment(thick, model=args.model, device="cpu").labels
        upsampled = sitk.Resample(on_thick, aseg, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        print(f"| {case} | {mean_dice(fine, reference, table):.4f} | {mean_dice(from_thick, reference, table):.4f} | "
              f"{mean_dice(upsampled, reference, table):.4f} |", flush=True)


if __name__ == "__main__":
    main()
