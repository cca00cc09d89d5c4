"""Pilot of one loss-study arm at the study's scale: how fast does its validation curve flatten, and does
re-estimating BatchNorm before validation change what the curve says?

One ``Trainer`` run (constant learning rate, so that flattening is the network's and not the schedule's) on the
training maps of the data folder, stopped after ``--minutes`` (a checkpoint is written; ``--resume`` continues
it). Every ``--validate-every`` steps the held-out synthetic maps and the real dev scans are scored twice, at
the study's grid: with the BatchNorm running averages as trained, and after re-estimating them on
``--bn-samples`` training samples (a fixed draw, on a copy of the network) as ``seglossbrain study
--validation-bn-samples`` does. Prints one Markdown row per validation.

    nice -n 19 python bench/experiments/study_pilot.py --arm explog --lr 1e-3 --minutes 9.5 --threads 1 \
        --out /tmp/pilot_explog
"""
from __future__ import annotations

import argparse
import dataclasses
import threading
import time

import torch

from SegLossBrainLib import paths
from SegLossBrainLib.study.settings import ARMS, default_patch_size, default_validation_size
from SegLossBrainLib.training.trainer import Trainer, TrainingConfig
from SegLossBrainLib.training.validation import validate


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", default="explog", choices=list(ARMS))
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--grid-spacing", type=float, default=3.0)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--validate-every", type=int, default=100)
    parser.add_argument("--bn-samples", type=int, default=16)
    parser.add_argument("--minutes", type=float, default=9.5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="/tmp/study_pilot")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = paths.data_dir()
    maps, held_out = paths.split_held_out(sorted(str(p) for p in (data / paths.LABEL_MAPS).glob("*.nii*")))
    real = [(str(data / paths.REAL_DEV / i), str(data / paths.REAL_DEV / a), n) for n, i, a in paths.REAL_DEV_SCANS]
    architecture, loss, params = ARMS[args.arm]
    g = args.grid_spacing
    config = TrainingConfig(label_maps=maps, validation_maps=held_out, real_pairs=real, run_dir=args.out,
                            architecture=architecture, loss=loss, loss_params=dict(params), learning_rate=args.lr,
                            batch_size=args.batch_size, patch_size=default_patch_size(g), steps=100000,
                            validate_every=args.validate_every, validation_size=default_validation_size(g),
                            precision=args.precision, seed=args.seed, synthesis={"spacing_mm": g})
    stop = threading.Event()
    trainer = Trainer(config, stop_event=stop)
    if args.resume:
        trainer.resume()
    recalibrated = dataclasses.replace(config, validation_bn_samples=args.bn_samples)
    losses = []
    started = time.perf_counter()

    def validator(network) -> dict:
        t0 = time.perf_counter()
        plain = validate(network, trainer.table, config, trainer.device)
        again = validate(network, trainer.table, recalibrated, trainer.device, trainer.generator)
        window = losses[-args.validate_every:]
        print(f"| {trainer.step} | {time.perf_counter() - started:.0f} | {sum(window) / max(len(window), 1):.4f} | "
              f"{plain['synthetic_mean']:.3f} | {again['synthetic_mean']:.3f} | {plain['real_mean']:.3f} | "
              f"{again['real_mean']:.3f} | {time.perf_counter() - t0:.1f} |", flush=True)
        return {**again, "as_trained": {k: plain[k] for k in ("synthetic_mean", "real_mean")}}

    trainer.validator = validator
    trainer.on_event = lambda event: losses.append(event["loss"]) if event.get("event") == "step" else None
    threading.Timer(args.minutes * 60, stop.set).start()
    print(f"{args.arm} lr {args.lr:g}, {g:g} mm, patch {default_patch_size(g)}, validation "
          f"{default_validation_size(g)}, {args.precision}, batch {args.batch_size}, {args.threads} thread(s), "
          f"constant learning rate; BatchNorm re-estimated on {args.bn_samples} samples in the 'recal.' columns")
    print("| step | wall s | loss (mean since last) | held-out synthetic, as trained | held-out synthetic, recal. | "
          "real, as trained | real, recal. | validation s |")
    print("|---|---|---|---|---|---|---|---|")
    result = trainer.run()
    print(f"{result['status']} at step {result['step']} after {time.perf_counter() - started:.0f} s "
          f"({trainer.elapsed / max(trainer.step, 1):.2f} s/step of training time)")


if __name__ == "__main__":
    main()
