"""Make the embedded demo volume: a synthetic T1-weighted head at 1 mm, drawn by SegLossBrain's own generator
from a label map held out of training, with its ground-truth labels.

    python bench/release/make_demo_volume.py ../shared/data/synthseg_label_maps/training_seg_20.nii.gz Resources/Samples
"""
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from SegLossBrainLib.synthesis.generator import SynthesisSettings, SyntheticBrainGenerator


def main(label_map: str, out_dir: str, seed: int = 4) -> None:
    settings = SynthesisSettings(patch_size=(176, 224, 176), spacing_mm=1.0, t1_fraction=1.0, rotation_deg=4.0,
                                 scale_range=(0.95, 1.05), translation_mm=0.0, deformation_std_mm=1.0,
                                 low_resolution_fraction=0.0, noise_std_max=0.02, bias_std=0.15)
    generator = SyntheticBrainGenerator([label_map], settings)
    image, target = generator.sample(torch.Generator().manual_seed(seed), source_index=0)
    array = (image[0].numpy() * 255).round().astype(np.uint8)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for data, name in ((array, "synthetic_t1_demo.nii.gz"), (target.numpy().astype(np.uint8), "synthetic_t1_demo_labels.nii.gz")):
        volume = sitk.GetImageFromArray(data)
        volume.SetSpacing((1.0, 1.0, 1.0))
        volume.SetOrigin((-88.0, -112.0, -88.0))  # LPS, centred near the brain
        sitk.WriteImage(volume, str(out / name), useCompression=True)
        print(out / name, (out / name).stat().st_size // 1024, "KiB")


if __name__ == "__main__":
    main(*sys.argv[1:3])
