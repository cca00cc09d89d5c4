"""A synthetic *site*: one scanner profile and one labelling convention, several subjects (issue 13's proxy).

    python bench/experiments/synthetic_site.py --out /tmp/site [--maps 01,02,...] [--seed 2026]

What a site that fine-tunes has, and what this imitates:

* **One scanner.** Every case is rendered from its label map with the SAME per-label intensities (one
  T1-like draw of ``synthesis.intensity.draw_label_intensities`` under ``--seed``), the same coil bias field,
  the same partial-volume blur, slice thickness along the same axis, noise level and gamma. Only the anatomy
  (the subject's label map) and the noise realisation change from case to case.
* **Its own labelling convention**, systematically different from the training maps where FreeSurfer and the
  training maps are known to disagree (the hidden site's pallidum/putamen, accumbens, inferior lateral
  ventricle): the pallidum is drawn one voxel larger into the putamen, the accumbens two voxels larger into the
  caudate, putamen and white matter, the inferior lateral ventricle one voxel larger into the white matter,
  hippocampus and amygdala, and the amygdala one voxel larger into the hippocampus. The image is rendered from
  the original anatomy: only the labels change, as when a site's raters draw boundaries their own way.

``--fs-maps`` (issue 31) makes a site from the brain-only FreeSurfer/FastSurfer maps of ``fs_label_maps/``
instead: the labels are those maps as they are (FreeSurfer's values and convention, no hand-made dilations), the image
is skull-stripped (outside the brain is 0), and ``--label-jitter-mm`` renders the image from a smoothly deformed
copy of the anatomy while the labels stay put, so that, as with FreeSurfer on a real scan, the labels miss the
image's boundaries by about a voxel here and there and cannot be fitted exactly.

    python bench/experiments/synthetic_site.py --fs-maps --out /tmp/fs_site [--label-jitter-mm 1.0]

Output per case, on the label map's own grid (1 mm whole head): ``<case>_image.nii.gz`` (int16) and
``<case>_labels.nii.gz`` (the 19-structure index order), plus ``site.json`` with the profile. The files are
data, not code: keep them out of git (default maps: the 20 SynthSeg maps; the two held-out ones among them).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from SegLossBrainLib.labels import load_label_table
from SegLossBrainLib.paths import BRAIN_LABEL_MAPS, find_data_dir, label_maps_dir
from SegLossBrainLib.synthesis.intensity import (apply_gamma, bias_field, degrade_resolution,
                                                 draw_label_intensities, gaussian_blur)

# (structure that grows, radius in voxels, structures it may take over), applied in this order
CONVENTION = (("pallidum", 1, ("putamen",)),
              ("accumbens", 2, ("caudate", "putamen", "cerebral white matter")),
              ("inferior lateral ventricle", 1, ("cerebral white matter", "hippocampus", "amygdala")),
              ("amygdala", 1, ("hippocampus",)))
ALL_MAPS = ",".join(f"{n:02d}" for n in range(1, 21))
PROFILE = {"bias_std": 0.25, "partial_volume_sigma": 0.5, "slice_thickness_mm": 1.8, "thick_axis": 0,
           "noise_std": 0.025, "gamma": 1.3, "within_label_std": 0.03}


def site_labels(indices: np.ndarray, reference: sitk.Image, table) -> np.ndarray:
    """The site's convention applied to 19-structure labels (each growth by a ball of the given radius)."""
    labels = indices.copy()
    for grower, radius, victims in CONVENTION:
        g = table.names.index(grower)
        mask = sitk.GetImageFromArray((labels == g).astype(np.uint8))
        mask.CopyInformation(reference)
        grown = sitk.GetArrayFromImage(sitk.BinaryDilate(mask, [radius] * 3, sitk.sitkBall)).astype(bool)
        takeable = np.isin(labels, [table.names.index(v) for v in victims])
        labels[grown & takeable] = g
    return labels


def jittered_anatomy(label_map: sitk.Image, std_mm: float, seed: int) -> sitk.Image:
    """The label map warped by a smooth random B-spline deformation (control points ~21 mm apart, coefficients
    of ``std_mm``), nearest neighbour: the anatomy the image shows, a little off the labels."""
    transform = sitk.BSplineTransformInitializer(label_map, [12, 12, 12])
    rng = np.random.default_rng(seed)
    transform.SetParameters(rng.normal(0.0, std_mm, len(transform.GetParameters())).tolist())
    return sitk.Resample(label_map, label_map, transform, sitk.sitkNearestNeighbor, 0)


def fs_map_files(names: str | None) -> list[Path]:
    folder = (find_data_dir() or Path("no data folder")) / BRAIN_LABEL_MAPS
    files = sorted(folder.glob("*.nii.gz"))
    if names:
        wanted = names.split(",")
        files = [f for f in files if any(f.name.startswith(w) for w in wanted)]
    if not files:
        raise SystemExit(f"no FreeSurfer label maps found in {folder}")
    return files


def short_name(path: Path) -> str:
    """oasis_OAS1_0001_fastsurfer_aseg.nii.gz -> oasis_OAS1_0001 (the subject, without the tool)."""
    name = path.name.split("_aseg")[0]
    for tool in ("_fastsurfer", "_fs6", "_fs"):
        name = name.removesuffix(tool)
    return name


def render(values: np.ndarray, codes: np.ndarray, means, stds, spacing_mm: float, case_seed: int,
           site_seed: int) -> np.ndarray:
    """The site's scanner applied to one label map (codes index ``values``); int16 [D, H, W] in 0..1000."""
    noise = torch.Generator().manual_seed(case_seed)
    coil = torch.Generator().manual_seed(site_seed)  # the same bias field for every case: one coil
    codes_t = torch.from_numpy(codes)
    image = torch.as_tensor(means, dtype=torch.float32)[codes_t]
    image = image + torch.as_tensor(stds, dtype=torch.float32)[codes_t] * torch.randn(codes.shape, generator=noise)
    image = gaussian_blur(image[None, None], [PROFILE["partial_volume_sigma"]] * 3)
    image = image * bias_field(codes.shape, PROFILE["bias_std"], 4, coil, "cpu")
    resolution = [spacing_mm] * 3
    resolution[PROFILE["thick_axis"]] = PROFILE["slice_thickness_mm"]
    image = degrade_resolution(image, resolution, spacing_mm, PROFILE["noise_std"], noise)
    return np.round(apply_gamma(image, PROFILE["gamma"])[0, 0].numpy() * 1000).astype(np.int16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--maps", default=ALL_MAPS,
                        help="label-map numbers (training_seg_NN.nii.gz); with --fs-maps: file-name prefixes")
    parser.add_argument("--fs-maps", action="store_true", help="the site from fs_label_maps/ (FreeSurfer's convention)")
    parser.add_argument("--label-jitter-mm", type=float, default=0.0,
                        help="render the image from the anatomy deformed by this much (B-spline coefficient std)")
    parser.add_argument("--seed", type=int, default=2026, help="the site: its contrast and coil")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = load_label_table()
    contrast = torch.Generator().manual_seed(args.seed)
    every_value = np.arange(0, 1000)  # intensities drawn once for every possible label value: one scanner
    means, stds = draw_label_intensities(every_value, True, PROFILE["within_label_std"], 1.0, contrast)
    if args.fs_maps:  # skull-stripped: outside the brain is dark
        means, stds = means.copy(), stds.copy()
        means[0], stds[0] = 0.0, 0.0
        sources = [(f"site_{short_name(f)}", f) for f in fs_map_files(args.maps if args.maps != ALL_MAPS else None)]
    else:
        sources = [(f"site_{n.strip()}", label_maps_dir() / f"training_seg_{n.strip()}.nii.gz")
                   for n in args.maps.split(",")]
    for number, (case, path) in enumerate(sources, start=1):
        label_map = sitk.ReadImage(str(path))
        raw = sitk.GetArrayFromImage(label_map).astype(np.int64)
        spacing = label_map.GetSpacing()
        if not np.allclose(spacing, spacing[0]):
            raise SystemExit(f"{path}: anisotropic map {spacing}; the site renderer assumes isotropic voxels")
        anatomy = raw
        if args.label_jitter_mm > 0:
            anatomy = sitk.GetArrayFromImage(jittered_anatomy(label_map, args.label_jitter_mm, args.seed + number))
            anatomy = anatomy.astype(np.int64)
        seed = number if args.fs_maps else int(case.split("_")[1])
        image = render(every_value, anatomy, means, stds, spacing[0], case_seed=seed, site_seed=args.seed)
        # A FreeSurfer site hands over its aseg as it is: FreeSurfer's values, which fine-tuning recognises as such
        labels = raw.astype(np.int16) if args.fs_maps else \
            site_labels(table.map_freesurfer(raw), label_map, table).astype(np.uint8)
        for suffix, array in (("image", image), ("labels", labels)):
            volume = sitk.GetImageFromArray(array)
            volume.CopyInformation(label_map)
            sitk.WriteImage(volume, str(out / f"{case}_{suffix}.nii.gz"), useCompression=True)
        changed = 0 if args.fs_maps else int((labels != table.map_freesurfer(raw)).sum())
        off = int((table.map_freesurfer(anatomy) != table.map_freesurfer(raw)).sum())
        print(f"{case}: {changed} voxels relabelled by the site's convention, {off} voxels of the image's anatomy "
              f"off the labels ({100 * off / max(1, int((raw > 0).sum())):.1f}% of the brain)", flush=True)
    convention = "FreeSurfer's own (fs_label_maps)" if args.fs_maps else CONVENTION
    (out / "site.json").write_text(json.dumps({"seed": args.seed, "profile": PROFILE, "convention": convention,
                                               "maps": [case for case, _ in sources],
                                               "label_jitter_mm": args.label_jitter_mm}, indent=1))


if __name__ == "__main__":
    main()
