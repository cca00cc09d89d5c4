"""How often ``--hemispheres`` puts a paired-structure voxel on the side FreeSurfer's aseg gives it, on the real
dev scans (skips none: needs the data folder).

    python bench/experiments/hemisphere_agreement.py [--model PATH] [--margins 0,4,8,12] [--skip-model]

Two inputs per scan: aseg's own labels merged to the 19 structures (isolates the split method: the structures
are exactly aseg's, only the side is ours) and the shipped model's output (the product). Scored over the voxels
where aseg gives a side (its left/right value of a paired structure) and the split labelmap has a paired
structure too. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SegLossBrainLib.inference.segment import segment
from SegLossBrainLib.labels import load_label_table
from SegLossBrainLib.paths import REAL_DEV, REAL_DEV_SCANS, data_dir
from SegLossBrainLib.postprocessing.hemispheres import split_hemispheres
from SegLossBrainLib.resources import shipped_models_dir


def side_lookup(table) -> np.ndarray:
    """aseg value -> +1 left, -1 right, 0 no side (unpaired, or not a structure's own left/right value)."""
    lookup = np.zeros(256, np.int8)
    for s in table.structures:
        if s.paired:
            lookup[s.freesurfer_sides[0]], lookup[s.freesurfer_sides[1]] = 1, -1
    return lookup


def agreement(split: sitk.Image, aseg: np.ndarray, lookup: np.ndarray) -> tuple[float, int]:
    ours = lookup[sitk.GetArrayViewFromImage(split)]
    theirs = lookup[aseg]
    scored = (ours != 0) & (theirs != 0)
    return float((ours[scored] == theirs[scored]).mean()), int(scored.sum())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(shipped_models_dir() / "wong2018-explog.safetensors"))
    parser.add_argument("--margins", default="8")
    parser.add_argument("--skip-model", action="store_true")
    args = parser.parse_args()
    table = load_label_table()
    lookup = side_lookup(table)
    margins = [float(m) for m in args.margins.split(",")]
    print("| scan | labels | margin mm | on aseg's side | voxels scored | split time s | plane normal (LPS) |")
    print("|---|---|---|---|---|---|---|")
    for case, image_file, aseg_file in REAL_DEV_SCANS:
        folder = data_dir() / REAL_DEV
        aseg_image = sitk.ReadImage(str(folder / aseg_file))
        aseg = sitk.GetArrayFromImage(aseg_image).astype(np.int64)
        merged = sitk.GetImageFromArray(table.map_freesurfer(aseg))
        merged.CopyInformation(aseg_image)
        inputs = [("aseg merged", merged)]
        if not args.skip_model:
            image = sitk.ReadImage(str(folder / image_file))
            inputs.append((f"model {Path(args.model).stem}", segment(image, model=args.model, device="cpu").labels))
        for name, labels in inputs:
            for margin in margins:
                start = time.perf_counter()
                split, plane = split_hemispheres(labels, table, margin_mm=margin)
                seconds = time.perf_counter() - start
                share, count = agreement(split, aseg, lookup)
                normal = ", ".join(f"{v:+.3f}" for v in plane.normal)
                print(f"| {case} | {name} | {margin:g} | {100 * share:.3f} % | {count:,} | {seconds:.1f} | {normal} |",
                      flush=True)


if __name__ == "__main__":
    main()
