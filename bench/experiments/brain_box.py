"""Can a coarse pass find the brain, so that the 1.5 mm network runs on the brain's box instead of the head's?

    python bench/experiments/brain_box.py [--coarse-spacing 3] [--precision bf16] [SCAN ...]

For each scan (default: the four real_dev scans): the network on the usual head-box grid at 1.5 mm (the
reference), and the same network on a grid planned the same way at ``--coarse-spacing``. Reports, along each
grid axis, how far the brain (any of the 19 structures but CSF) found by the coarse pass reaches beyond or
falls short of the reference's brain, in mm (negative: the coarse box misses that much), and the voxel counts
of the two grids. A margin larger than the worst shortfall keeps every brain voxel inside the cropped grid.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from SegLossBrainLib.imageio.volumes import read_image
from SegLossBrainLib.inference.segment import load_network, predict_probabilities
from SegLossBrainLib.labels import CSF_INDEX
from SegLossBrainLib.paths import REAL_DEV, find_data_dir
from SegLossBrainLib.preprocessing import grid as grids


def brain_extent(probabilities: torch.Tensor, grid: grids.NetworkGrid) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the brain's voxel corners along the grid's frame axes (x, y, z), in mm."""
    labels = probabilities.argmax(0).numpy()
    brain = (labels > 0) & (labels != CSF_INDEX)
    k, j, i = np.nonzero(brain)
    frame = np.asarray(grid.direction).reshape(3, 3)
    start = np.asarray(grid.origin) @ frame  # first voxel centre in frame coordinates
    low = start + (np.array([i.min(), j.min(), k.min()]) - 0.5) * grid.spacing
    high = start + (np.array([i.max(), j.max(), k.max()]) + 0.5) * grid.spacing
    return low, high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scans", nargs="*")
    parser.add_argument("--coarse-spacing", type=float, default=3.0)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scans = args.scans or sorted(str(p) for p in (find_data_dir() / REAL_DEV).glob("*.nii.gz") if "aseg" not in p.name)
    device = torch.device("cpu")
    network, _ = load_network(None, device)
    print(f"| scan | head grid | coarse grid ({args.coarse_spacing} mm) | coarse s | shortfall low x/y/z mm | "
          "shortfall high x/y/z mm |\n|---|---|---|---|---|---|")
    for scan in scans:
        image = read_image(scan)
        full_grid = grids.plan_network_grid(image)
        full = predict_probabilities(network, grids.to_network(image, full_grid), device, precision=args.precision)
        coarse_grid = grids.plan_network_grid(image, args.coarse_spacing)
        started = time.perf_counter()
        coarse = predict_probabilities(network, grids.to_network(image, coarse_grid), device,
                                       precision=args.precision)
        seconds = time.perf_counter() - started
        (low, high), (c_low, c_high) = brain_extent(full, full_grid), brain_extent(coarse, coarse_grid)
        short_low, short_high = low - c_low, c_high - high  # < 0: the coarse box misses brain
        print(f"| {Path(scan).name} | {'x'.join(map(str, full_grid.shape))} | "
              f"{'x'.join(map(str, coarse_grid.shape))} | {seconds:.2f} | "
              f"{' / '.join(f'{v:+.1f}' for v in short_low)} | {' / '.join(f'{v:+.1f}' for v in short_high)} |")


if __name__ == "__main__":
    main()
