"""How many training samples does the loss study's BatchNorm re-estimation before validation need? Held-out
synthetic Dice of one set of weights after re-estimating on N samples, for several draws (seeds) of those
samples: the spread over draws is the noise the re-estimation adds to a validation curve.

    nice -n 19 python bench/experiments/study_bn_samples.py /tmp/study_pilot/latest.safetensors --samples 8 16 32 64
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from SegLossBrainLib import paths
from SegLossBrainLib.labels import load_label_table
from SegLossBrainLib.models.files import load_model
from SegLossBrainLib.study.settings import default_patch_size, default_validation_size
from SegLossBrainLib.synthesis.generator import SynthesisSettings, SyntheticBrainGenerator
from SegLossBrainLib.training.bn_recalibration import recalibrated_copy
from SegLossBrainLib.training.validation import synthetic_dice


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights")
    parser.add_argument("--samples", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--draws", type=int, default=3, help="seeds of the re-estimation draw")
    parser.add_argument("--grid-spacing", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = paths.data_dir()
    maps, held_out = paths.split_held_out(sorted(str(p) for p in (data / paths.LABEL_MAPS).glob("*.nii*")))
    g = args.grid_spacing
    generator = SyntheticBrainGenerator(maps, SynthesisSettings(spacing_mm=g, patch_size=default_patch_size(g)))
    network, _ = load_model(args.weights)
    table = load_label_table()

    def score(net) -> float:
        result = synthetic_dice(net, table, held_out, default_validation_size(g), "cpu", {"spacing_mm": g})
        return float(np.mean([v["mean"] for v in result.values()]))

    print(f"{args.weights}: held-out synthetic Dice (mean of 17, maps 19 and 20 at {g:g} mm) as trained "
          f"{score(network):.3f}")
    print("| samples | Dice per draw | mean | spread (max - min) | seconds per re-estimation |")
    print("|---|---|---|---|---|")
    for samples in args.samples:
        values, seconds = [], []
        for draw in range(args.draws):
            started = time.perf_counter()
            copy = recalibrated_copy(network, generator, samples, seed=31 + draw)
            seconds.append(time.perf_counter() - started)
            values.append(score(copy))
        print(f"| {samples} | {', '.join(f'{v:.3f}' for v in values)} | {np.mean(values):.3f} | "
              f"{max(values) - min(values):.3f} | {np.mean(seconds):.1f} |", flush=True)


if __name__ == "__main__":
    main()
