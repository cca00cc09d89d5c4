"""Do candidate weights keep their robustness? Real dev scans made harder, each model scored on the same probes.

    python bench/experiments/robustness_probes.py BASE.safetensors CAND.safetensors [...] [--csv out.csv]

Probes from each real dev scan: the original; 5 mm slices along the axis closest to superior (Gaussian
through-plane blur with FWHM = the new spacing, then linear resampling); 3 mm isotropic (same); inverted
contrast inside the head (99.5th percentile minus the intensity, background kept at 0: a T2-like order).
Each probe is scored on its own grid against the FreeSurfer aseg resampled onto it by nearest neighbour:
mean Dice over the 17 scored structures. Models trained on a dev scan are not judged by that scan's rows.
``--pial-refinement both`` scores every model with and without the cortex boundary refinement (segment's default
is with it), as two rows.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from SegLossBrainLib.evaluation.metrics import dice_per_label
from SegLossBrainLib.inference.segment import segment
from SegLossBrainLib.labels import load_label_table
from SegLossBrainLib.models.files import load_model
from SegLossBrainLib.postprocessing.qc import NoBrainError
from SegLossBrainLib.paths import REAL_DEV, REAL_DEV_SCANS, data_dir
from SegLossBrainLib.preprocessing.grid import closest_axes

PROBES = ("orig", "thick5", "iso3", "inverted")


def coarser(image: sitk.Image, spacing) -> sitk.Image:
    """Blurred (FWHM = new spacing, per axis) and resampled onto a coarser grid over the same extent."""
    old, new = np.array(image.GetSpacing()), np.array(spacing, dtype=float)
    blurred = image
    for axis, (o, n) in enumerate(zip(old, new)):
        if n > o:
            smoothing = sitk.RecursiveGaussianImageFilter()
            smoothing.SetSigma(float(np.sqrt(n ** 2 - o ** 2) / 2.355))
            smoothing.SetDirection(axis)
            blurred = smoothing.Execute(blurred)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    reference = sitk.Image([int(np.ceil(s * o / n)) for s, o, n in zip(image.GetSize(), old, new)], sitk.sitkFloat32)
    reference.SetSpacing(new.tolist())
    reference.SetDirection(image.GetDirection())
    reference.SetOrigin((np.array(image.GetOrigin()) + direction @ ((new - old) / 2)).tolist())  # same outer corner
    return sitk.Resample(blurred, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def inverted(image: sitk.Image) -> sitk.Image:
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    head = array > 0
    top = np.percentile(array[head], 99.5)
    result = sitk.GetImageFromArray(np.where(head, np.clip(top - array, 0, None) + 0.05 * top, 0).astype(np.float32))
    result.CopyInformation(image)
    return result


def probes(image: sitk.Image) -> dict:
    superior_axis = int(closest_axes(image.GetDirection())[0][2])
    thick = list(image.GetSpacing())
    thick[superior_axis] = 5.0
    return {"orig": image, "thick5": coarser(image, thick), "iso3": coarser(image, [3.0] * 3),
            "inverted": inverted(image)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--csv", help="per structure, per probe, per model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pial-refinement", choices=("on", "off", "both"), default="on")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = load_label_table()
    refinements = {"on": (True,), "off": (False,), "both": (False, True)}[args.pial_refinement]
    networks = {}
    for m in args.models:
        network = load_model(m)[0].eval()
        for refine in refinements:
            suffix = "" if len(refinements) == 1 else (" + pial refinement" if refine else " (network boundary)")
            networks[f"{Path(m).parent.name}/{Path(m).name}{suffix}"] = (network, refine)
    rows = []
    for case, image_file, aseg_file in REAL_DEV_SCANS:
        folder = data_dir() / REAL_DEV
        image = sitk.Cast(sitk.ReadImage(str(folder / image_file)), sitk.sitkFloat32)
        aseg = sitk.ReadImage(str(folder / aseg_file))
        for probe, probe_image in probes(image).items():
            on_grid = sitk.Resample(aseg, probe_image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
            reference = table.map_freesurfer(sitk.GetArrayFromImage(on_grid).astype(np.int64))
            for name, (network, refine) in networks.items():
                try:
                    labels = sitk.GetArrayFromImage(segment(probe_image, model=network, device=args.device,
                                                            pial_refinement=refine).labels)
                    dice = dice_per_label(labels, reference, table.num_classes)
                except NoBrainError as error:  # a broken candidate scores nothing, the others are still judged
                    print(f"{case} {probe} {name}: {error}", flush=True)
                    dice = np.zeros(table.num_classes)
                rows.append({"model": name, "scan": case, "probe": probe,
                             "mean17": round(float(np.nanmean([dice[i] for i in table.scored_indices])), 4),
                             **{table.names[i]: round(float(dice[i]), 4) for i in table.scored_indices}})
                print(f"{case} {probe} {name}: {rows[-1]['mean17']:.4f}", flush=True)
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    columns = [(case, probe) for case, _, _ in REAL_DEV_SCANS for probe in PROBES]
    print("\n| model | " + " | ".join(f"{case} {probe}" for case, probe in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name in networks:
        found = {(r["scan"], r["probe"]): r["mean17"] for r in rows if r["model"] == name}
        print(f"| {name} | " + " | ".join(f"{found[c]:.4f}" for c in columns) + " |")


if __name__ == "__main__":
    main()
