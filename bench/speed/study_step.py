"""Seconds per training step of the loss study at a chosen scale: network, precision, threads, batch size.

Each configuration is a real ``Trainer`` run (synthetic brain drawn on the study grid, forward, loss,
backward, Adam) on the training label maps of the data folder; validation is replaced by a no-op so that only
steps are timed. Reports wall seconds and CPU seconds (all threads) per step after ``--warmup`` steps: on a
shared machine the CPU seconds of a 1-thread run are what an idle core would take, the wall seconds what this
machine gave at the time (the load average is printed too).

    nice -n 19 python bench/speed/study_step.py --grid-spacing 3 --patch 64 --threads 1 2 --batch 1 2 \
        --precision bf16 fp32 --networks wong2018 vnet --steps 6
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from SegLossBrainLib import paths
from SegLossBrainLib.training.trainer import Trainer, TrainingConfig


def time_steps(network: str, loss: str, patch: int, spacing: float, batch: int, precision: str, steps: int,
               warmup: int, maps: list, device: str = "cpu") -> tuple[float, float]:
    """(wall s/step, CPU s/step) over ``steps`` steps after ``warmup`` steps."""
    marks = []

    def on_event(event):
        if event.get("event") == "step":
            marks.append((time.perf_counter(), time.process_time()))

    with tempfile.TemporaryDirectory() as folder:
        config = TrainingConfig(label_maps=maps, run_dir=folder, architecture=network, loss=loss,
                                patch_size=(patch,) * 3, steps=warmup + steps, batch_size=batch, precision=precision,
                                validate_every=10 ** 9, checkpoint_every=10 ** 9, synthesis={"spacing_mm": spacing},
                                device=device)
        trainer = Trainer(config, on_event=on_event, validator=lambda net: {"score": 0.0})
        trainer.save_checkpoint = lambda: None  # time the steps, not the final checkpoint
        trainer.run()
    (wall0, cpu0), (wall1, cpu1) = marks[warmup - 1], marks[-1]
    return (wall1 - wall0) / steps, (cpu1 - cpu0) / steps


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid-spacing", type=float, default=3.0)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--precision", nargs="+", default=["bf16", "fp32"])
    parser.add_argument("--networks", nargs="+", default=["wong2018", "vnet"])
    parser.add_argument("--loss", default="explog")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (TrainingConfig's default is the CPU)")
    parser.add_argument("--maps", type=int, default=3, help="training label maps loaded (the first N)")
    args = parser.parse_args(argv)
    folder = paths.label_maps_dir()
    maps, _ = paths.split_held_out(sorted(folder.glob("*.nii*")))
    maps = maps[: args.maps]
    print(f"grid {args.grid_spacing:g} mm, patch {args.patch}^3 ({args.patch * args.grid_spacing:g} mm), "
          f"loss {args.loss}, {args.steps} timed steps after {args.warmup}; load average {os.getloadavg()[0]:.2f}")
    print("| network | precision | threads | batch | wall s/step | CPU s/step | wall s/sample |")
    print("|---|---|---|---|---|---|---|")
    for network in args.networks:
        for precision in args.precision:
            for threads in args.threads:
                torch.set_num_threads(threads)
                for batch in args.batch:
                    wall, cpu = time_steps(network, args.loss, args.patch, args.grid_spacing, batch, precision,
                                           args.steps, args.warmup, maps, args.device)
                    print(f"| {network} | {precision} | {threads} | {batch} | {wall:.3f} | {cpu:.2f} | "
                          f"{wall / batch:.3f} |", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
