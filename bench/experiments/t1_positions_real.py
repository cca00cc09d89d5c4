"""Where each structure sits on the synthetic generator's T1 scale in a real, FreeSurfer-labelled T1 scan.

The generator's T1-like draws place every label between three anchors (0 CSF, 1 cortex, 2 cerebral white matter;
``synthesis/intensity.py``). This measures the same positions in real scans: the anchors are the medians of the
lateral ventricles, cortex and cerebral white matter, and each structure's 25th/50th/75th intensity percentiles
are mapped onto the scale piecewise linearly, as the generator does. A structure whose median lies outside the
generator's range is marked; that is how the ranges were checked against bert (issue 29).

Usage: python t1_positions_real.py IMAGE,ASEG [IMAGE,ASEG ...]   (default: bert, the real scan training may use)
"""
from __future__ import annotations

import argparse

import numpy as np
import SimpleITK as sitk

from SegLossBrainLib.paths import data_dir
from SegLossBrainLib.synthesis.intensity import T1_POSITIONS

STRUCTURES = (  # (name, aseg values); the first value's range is the one shown
    ("lateral ventricle", (4, 43)), ("inferior lateral ventricle", (5, 44)), ("3rd ventricle", (14,)),
    ("4th ventricle", (15,)), ("choroid plexus", (31, 63)), ("cerebral cortex", (3, 42)),
    ("cerebellum cortex", (8, 47)), ("hippocampus", (17, 53)), ("amygdala", (18, 54)), ("accumbens", (26, 58)),
    ("caudate", (11, 50)), ("putamen", (12, 51)), ("thalamus", (10, 49)), ("pallidum", (13, 52)),
    ("ventral DC", (28, 60)), ("brainstem", (16,)), ("cerebellum white matter", (7, 46)),
    ("optic chiasm", (85,)), ("cerebral white matter", (2, 41)),
)


def positions(image: np.ndarray, labels: np.ndarray) -> dict[str, tuple[float, float, float]]:
    """{structure: (p25, p50, p75) on the generator's T1 scale} for the structures present."""
    def median(values):
        return float(np.median(image[np.isin(labels, values)]))
    csf, grey, white = median((4, 43)), median((3, 42)), median((2, 41))

    def on_scale(v):
        return (v - csf) / (grey - csf) if v <= grey else 1 + (v - grey) / (white - grey)
    out = {}
    for name, values in STRUCTURES:
        inside = np.isin(labels, values)
        if inside.any():
            out[name] = tuple(on_scale(q) for q in np.percentile(image[inside], [25, 50, 75]))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", nargs="*", help="IMAGE,ASEG (default: real_dev's bert)")
    args = parser.parse_args(argv)
    real = data_dir() / "real_dev"
    pairs = args.pairs or [f"{real / 'bert_fs7.2_norm.nii.gz'},{real / 'bert_fs7.2_aseg.nii.gz'}"]
    for pair in pairs:
        image_path, labels_path = pair.split(",")
        image = sitk.GetArrayFromImage(sitk.ReadImage(image_path)).astype(np.float64)
        labels = sitk.GetArrayFromImage(sitk.ReadImage(labels_path))
        print(f"\n{image_path}\n\n| structure | p25 | median | p75 | generator range | median inside |")
        print("|---|---|---|---|---|---|")
        for name, (low, mid, high) in positions(image, labels).items():
            bounds = T1_POSITIONS[dict(STRUCTURES)[name][0]]
            inside = "yes" if bounds[0] <= mid <= bounds[1] else "**no**"
            print(f"| {name} | {low:.2f} | {mid:.2f} | {high:.2f} | {bounds[0]:.2f}–{bounds[1]:.2f} | {inside} |")


if __name__ == "__main__":
    main()
