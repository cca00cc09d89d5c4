"""Do candidate weights keep their robustness? Real dev scans made harder, each model scored on the same probes.

    python bench/experiments/robustness_probes.py BASE.safetensors CAND.safetensors [...] [--csv out.csv]

Probes from each real dev scan: the original; 5 mm slices along the axis closest to superior (Gaussian
through-plane blur with FWHM = the new spacing, then linear resampling); 3 mm isotropic (same); inverted
contrast inside the head (99.5th percentile minus the intensity, background kept at 0: a T2-like order); a
scanner-native-like acquisition (the grid tilted 12 degrees about left-right and 8 about anterior-posterior,
1 x 1 x 1.3 mm voxels, and a smooth bias field of +-20 %: what an unprocessed scan looks like to the pipeline).
Each probe is scored on its own grid against the FreeSurfer aseg resampled onto it by nearest neighbour (the
coarser grids' voxel centres are voxel centres of the original, so nothing moves), except the native-like probe:
on a tilted grid nearest neighbour moves each label by up to half a voxel, which alone costs points, so its
segmentation is brought back to the original grid (ITK's label-Gaussian interpolation) and scored against the
aseg as it is. Mean Dice over the 17 scored structures. Models trained on a dev scan are not judged by that scan's rows.
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

PROBES = ("orig", "thick5", "iso3", "inverted", "native")


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


def native_like(image: sitk.Image) -> sitk.Image:
    """``image`` as a tilted, slightly anisotropic acquisition with a smooth bias field (deterministic)."""
    tilt = sitk.Euler3DTransform()
    tilt.SetRotation(float(np.deg2rad(12)), float(np.deg2rad(8)), 0.0)
    old_direction = np.array(image.GetDirection()).reshape(3, 3)
    direction = np.array(tilt.GetMatrix()).reshape(3, 3) @ old_direction
    spacing = np.array([1.0, 1.0, 1.3]) * np.array(image.GetSpacing())
    size = np.array(image.GetSize())
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2).tolist()))
    new_size = np.ceil(size * np.array(image.GetSpacing()) / spacing).astype(int)
    reference = sitk.Image(new_size.tolist(), sitk.sitkFloat32)
    reference.SetSpacing(spacing.tolist())
    reference.SetDirection(direction.ravel().tolist())
    reference.SetOrigin((centre - direction @ ((new_size - 1) / 2 * spacing)).tolist())
    smoothing = sitk.RecursiveGaussianImageFilter()  # the thicker slices' through-plane blur, as in ``coarser``
    smoothing.SetSigma(float(np.sqrt(1.3 ** 2 - 1.0) * image.GetSpacing()[2] / 2.355))
    smoothing.SetDirection(2)
    resampled = sitk.Resample(smoothing.Execute(image), reference, sitk.Transform(), sitk.sitkLinear, 0.0,
                              sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(resampled)
    k, j, i = np.meshgrid(*[np.linspace(-1, 1, n) for n in array.shape], indexing="ij")
    bias = np.exp(0.2 * (0.6 * i + 0.5 * j - 0.6 * k) / 1.0)  # about +-20 % across the head
    result = sitk.GetImageFromArray((array * bias).astype(np.float32))
    result.CopyInformation(resampled)
    return result


def probes(image: sitk.Image) -> dict:
    superior_axis = int(closest_axes(image.GetDirection())[0][2])
    thick = list(image.GetSpacing())
    thick[superior_axis] = 5.0
    return {"orig": image, "thick5": coarser(image, thick), "iso3": coarser(image, [3.0] * 3),
            "inverted": inverted(image), "native": native_like(image)}


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
            scored_on = image if probe == "native" else probe_image
            on_grid = sitk.Resample(aseg, scored_on, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
            reference = table.map_freesurfer(sitk.GetArrayFromImage(on_grid).astype(np.int64))
            for name, (network, refine) in networks.items():
                try:
                    result = segment(probe_image, model=network, device=args.device, pial_refinement=refine).labels
                    if probe == "native":
                        result = sitk.Resample(result, image, sitk.Transform(), sitk.sitkLabelGaussian, 0)
                    labels = sitk.GetArrayFromImage(result)
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
