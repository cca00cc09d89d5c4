"""How good is "the sum of all structures" as the total intracranial volume (the ``batch`` table's ICV column)?

    python bench/experiments/icv_check.py [--model M] [--draws 4] [--size 160]

1. Synthetic heads from the two held-out label maps (never trained on), whole head in a ``--size``^3 field of
   view at 1.5 mm, full augmentation: the ICV estimate from ``segment`` against the label map's own intracranial
   volume (every voxel of the 19 structures, CSF included, on the same grid and field of view). The faces of
   the field of view that cut the labelled space are listed (the label maps' brainstem and CSF run on down the
   spinal canal, so the inferior face always cuts it; estimate and reference are then for the same field).
2. The real dev scans: the estimate, and for the two with a FreeSurfer aseg the aseg's brain + ventricles + CSF
   volume. That is NOT the same quantity: aseg leaves extra-cerebral CSF unlabelled, so it is expected to be
   well below any ICV; it is printed only to show the size of the gap.
Prints Markdown tables to paste into BENCHMARKS.md.
"""
from __future__ import annotations

import argparse

import numpy as np
import SimpleITK as sitk
import torch

from SegLossBrainLib.evaluation.volumes import intracranial_volume_ml, structure_volumes_ml
from SegLossBrainLib.imageio.volumes import read_image
from SegLossBrainLib.inference.cohort import load_cohort_model
from SegLossBrainLib.inference.segment import segment
from SegLossBrainLib.labels import load_label_table
from SegLossBrainLib.paths import HELD_OUT_MAPS, REAL_DEV, data_dir, label_maps_dir
from SegLossBrainLib.synthesis.generator import SynthesisSettings, SyntheticBrainGenerator

UNLABELLED = ("brainchop_t1_crop_unlabeled.nii.gz", "mne_sample_T1_skull_unlabeled.nii.gz")


def as_image(array: np.ndarray, spacing: float) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing([spacing] * 3)
    return image


def synthetic(network, draws: int, size: int) -> list[dict]:
    settings = SynthesisSettings(patch_size=(size, size, size))
    maps = [label_maps_dir() / name for name in HELD_OUT_MAPS]
    generator = SyntheticBrainGenerator([str(m) for m in maps], settings)
    rng = torch.Generator().manual_seed(2024)
    rows = []
    for index, source in enumerate(generator.sources):
        for draw in range(draws):
            image, target = generator.sample(rng, source_index=index)
            target = target.numpy().astype(np.uint8)
            inside = target > 0
            faces = {"I": inside[0], "S": inside[-1], "A": inside[:, 0], "P": inside[:, -1], "R": inside[:, :, 0],
                     "L": inside[:, :, -1]}  # array axes (z, y, x) of an LPS grid, before the random rotation
            touches = "".join(name for name, face in faces.items() if face.sum() > 50)
            truth = intracranial_volume_ml(structure_volumes_ml(as_image(target, settings.spacing_mm)))
            result = segment(as_image(image[0].numpy(), settings.spacing_mm), model=network, device="cpu")
            predicted = intracranial_volume_ml(result.volumes_ml)
            mask = sitk.GetArrayFromImage(result.labels) > 0
            dice = 2 * (mask & inside).sum() / (mask.sum() + inside.sum())
            rows.append({"case": f"{source.name} #{draw + 1}", "truth": truth, "predicted": predicted,
                         "error_percent": 100 * (predicted - truth) / truth, "dice": dice, "touches": touches})
            print(rows[-1], flush=True)
    return rows


def real(network) -> list[dict]:
    table = load_label_table()
    folder = data_dir() / REAL_DEV
    rows = []
    for name, aseg in (("bert_fs7.2_norm.nii.gz", "bert_fs7.2_aseg.nii.gz"), ("vxm_test_T1norm.nii.gz",
                                                                             "vxm_test_aseg.nii.gz")) + tuple(
            (u, None) for u in UNLABELLED):
        image = read_image(folder / name)
        volumes = segment(image, model=network, device="cpu").volumes_ml
        row = {"case": name, "predicted": intracranial_volume_ml(volumes), "csf": volumes["CSF"], "aseg": None}
        if aseg:
            reference = read_image(folder / aseg)
            mapped = table.map_freesurfer(sitk.GetArrayFromImage(reference))
            row["aseg"] = float((mapped > 0).sum() * np.prod(reference.GetSpacing()) / 1000)
            row["aseg_csf"] = float((mapped == table.names.index("CSF")).sum() * np.prod(reference.GetSpacing()) / 1000)
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model")
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--size", type=int, default=160)
    args = parser.parse_args()
    loaded = load_cohort_model(args.model, "cpu")
    print(f"model {loaded.name} ({loaded.sha256[:12]})")
    rows = synthetic(loaded.network, args.draws, args.size)
    real_rows = real(loaded.network)
    print("\n| held-out synthetic head | label map ICV | estimate | error | Dice of the intracranial mask | "
          "mask cut by the field of view at |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['truth']:.0f} mL | {r['predicted']:.0f} mL | {r['error_percent']:+.1f} % "
              f"| {r['dice']:.3f} | {r['touches'] or '-'} |")
    errors = np.array([r["error_percent"] for r in rows])
    print(f"\n{errors.size} draws: mean error {errors.mean():+.1f} %, mean |error| {np.abs(errors).mean():.1f} %, "
          f"range {errors.min():+.1f} .. {errors.max():+.1f} %")
    print("\n| real dev scan | ICV estimate | its CSF | aseg brain + ventricles + CSF (not an ICV) | aseg CSF |")
    print("|---|---|---|---|---|")
    for r in real_rows:
        aseg = f"{r['aseg']:.0f} mL | {r['aseg_csf']:.1f} mL" if r["aseg"] is not None else "- | -"
        print(f"| {r['case']} | {r['predicted']:.0f} mL | {r['csf']:.0f} mL | {aseg} |")


if __name__ == "__main__":
    main()
