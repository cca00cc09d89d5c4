"""Would test-time mirroring or an ensemble of models help on the real dev scans? Mean Dice of 17 (aseg reference).

    python bench/experiments/real_dev_ensemble.py MODEL [MODEL_A+MODEL_B ...] [--tta]

Each argument is one model file or several joined by '+': an ensemble whose probabilities are the mean of its
members' softmax outputs. Every entry is scored on bert and voxelmorph on their own grids. Models trained on a
dev scan are not judged by that scan's row (see each model card).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from SegLossBrainLib.evaluation.metrics import dice_per_label
from SegLossBrainLib.inference.segment import segment
from SegLossBrainLib.labels import load_label_table
from SegLossBrainLib.models.files import load_model
from SegLossBrainLib.paths import REAL_DEV, REAL_DEV_SCANS, data_dir


class MeanOfSoftmax(torch.nn.Module):
    """Returns log of the members' mean probability, so the engine's softmax gives that mean back."""

    def __init__(self, networks):
        super().__init__()
        self.networks = torch.nn.ModuleList(networks)

    def forward(self, x):
        mean = sum(torch.softmax(net(x).float(), dim=1) for net in self.networks) / len(self.networks)
        return torch.log(mean.clamp_min(1e-8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("entries", nargs="+", help="MODEL or MODEL_A+MODEL_B (an ensemble)")
    parser.add_argument("--tta", action="store_true", help="also score each entry with left-right mirroring")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = load_label_table()
    groups = [entry.split("+") for entry in args.entries]
    loaded = {path: load_model(path)[0].eval() for group in groups for path in group}
    folder = data_dir() / REAL_DEV
    for case, image_name, aseg_name in REAL_DEV_SCANS:
        image = sitk.Cast(sitk.ReadImage(str(folder / image_name)), sitk.sitkFloat32)
        aseg = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / aseg_name))).astype(np.int64)
        reference = table.map_freesurfer(aseg)
        for entry, group in zip(args.entries, groups):
            network = loaded[group[0]] if len(group) == 1 else MeanOfSoftmax([loaded[p] for p in group]).eval()
            for tta in (False, True) if args.tta else (False,):
                labels = sitk.GetArrayFromImage(segment(image, model=network, device="cpu", tta=tta).labels)
                dice = dice_per_label(labels, reference, table.num_classes)
                scored = np.array([dice[i] for i in table.scored_indices])
                names = "+".join(Path(p).name for p in group)
                print(f"{case}\t{names}{' (mirrored too)' if tta else ''}\tmean17 {np.nanmean(scored):.4f}\t"
                      + " ".join(f"{table.names[i]} {dice[i]:.3f}" for i in (10, 17, 4)), flush=True)


if __name__ == "__main__":
    main()
