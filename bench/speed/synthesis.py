"""Throughput of the synthetic training-pair generator: samples per second by patch size and thread count.

Uses one real training label map of the data folder ($SEGLOSSBRAIN_DATA, or ../shared/data). On a GPU
(``--device cuda``) the thread count only affects the host-side parameter draws.

    python bench/speed/synthesis.py [--map PATH] [--threads 1 2] [--patches 64 96] [--samples 10] [--device cpu]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from SegLossBrainLib.paths import label_maps_dir
from SegLossBrainLib.synthesis.generator import LabelMapSource, SynthesisSettings, SyntheticBrainGenerator



def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--map", type=Path, help="label map (default: training_seg_01 of the data folder)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--patches", type=int, nargs="+", default=[64, 96])
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    args.map = args.map or label_maps_dir("--map") / "training_seg_01.nii.gz"

    start = time.perf_counter()
    source = LabelMapSource.load(args.map, device=args.device)
    print(f"loaded {args.map.name} in {time.perf_counter() - start:.2f} s: cropped to {tuple(source.codes.shape)} "
          f"uint8, {len(source.values)} generation labels, device {args.device}")
    sync = torch.cuda.synchronize if torch.device(args.device).type == "cuda" else (lambda: None)
    for threads in args.threads:
        torch.set_num_threads(threads)
        for patch in args.patches:
            generator = SyntheticBrainGenerator([source], SynthesisSettings(patch_size=patch), device=args.device)
            rng = torch.Generator().manual_seed(0)
            generator.sample(rng)  # warm-up: allocator, kernels
            sync()
            start = time.perf_counter()
            for _ in range(args.samples):
                generator.sample(rng)
            sync()
            elapsed = time.perf_counter() - start
            print(f"threads {threads}  patch {patch}^3  {args.samples / elapsed:6.2f} samples/s  "
                  f"({1000 * elapsed / args.samples:.0f} ms/sample)")


if __name__ == "__main__":
    main()
