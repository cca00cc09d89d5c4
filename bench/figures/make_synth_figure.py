"""Make docs/images/synth_samples.png: generated training samples beside their targets.

Rows are samples (the first half T1-like contrast, the rest random contrast), columns the axial and coronal
mid slices of the image and the same slices with the 20-label target overlaid. Needs the training label
maps of the data folder ($SEGLOSSBRAIN_DATA, or ../shared/data beside the checkout); only a PNG is written into
the repository.

    python bench/figures/make_synth_figure.py [--samples 6] [--out docs/images/synth_samples.png]
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402 (installed with matplotlib)

from SegLossBrainLib.labels import load_label_table  # noqa: E402
from SegLossBrainLib.paths import label_maps_dir  # noqa: E402
from SegLossBrainLib.synthesis.generator import SynthesisSettings, SyntheticBrainGenerator  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def overlay(image: np.ndarray, target: np.ndarray, colors: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    rgb = np.repeat(image[..., None], 3, axis=-1)
    coloured = colors[target][..., :3] / 255.0
    mask = (target > 0)[..., None]
    return np.clip(np.where(mask, (1 - alpha) * rgb + alpha * coloured, rgb), 0, 1)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=Path, help="folder of label maps (default: the data folder's)")
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--patch", type=int, nargs=3, default=(112, 128, 112), help="D H W at 1.5 mm")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "synth_samples.png")
    args = parser.parse_args(argv)

    args.maps = args.maps or label_maps_dir("--maps")
    paths = sorted(args.maps.glob("training_seg_*.nii.gz"))[: args.samples]
    if not paths:
        raise SystemExit(f"no training_seg_*.nii.gz in {args.maps}")
    colors = load_label_table().colors
    half = (args.samples + 1) // 2
    rows = []
    for row in range(args.samples):
        # one map per row, loaded alone so the script stays light on memory
        settings = SynthesisSettings(patch_size=tuple(args.patch), t1_fraction=1.0 if row < half else 0.0)
        generator = SyntheticBrainGenerator([paths[row % len(paths)]], settings)
        image, target = generator.sample(torch.Generator().manual_seed(args.seed + row))
        image, target = image[0].numpy(), target.numpy()
        d, h, _ = image.shape
        # arrays are (S, P, L): an axial slice shows anterior up, patient left on the right (radiological);
        # a coronal slice is flipped so superior is up
        axial = (image[d // 2], target[d // 2])
        coronal = (image[:, h // 2][::-1], target[:, h // 2][::-1])
        contrast = "T1-like" if row < half else "random"
        rows.append((f"{paths[row % len(paths)].name[:15]} {contrast}", axial, coronal))

    fig, axes = plt.subplots(len(rows), 4, figsize=(7.2, 1.9 * len(rows)))
    for r, (title, axial, coronal) in enumerate(rows):
        panels = [axial[0], overlay(*axial, colors), coronal[0], overlay(*coronal, colors)]
        for c, panel in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(panel, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(title, fontsize=6)
    for c, name in enumerate(["axial image", "axial target", "coronal image", "coronal target"]):
        axes[0, c].set_title(name, fontsize=7)
    fig.tight_layout(pad=0.3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=80, format="png")
    # noise in the images defeats PNG compression; a 256-colour palette keeps the file small and looks the same
    Image.open(buffer).convert("RGB").quantize(colors=256).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
