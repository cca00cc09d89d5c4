"""Recalibrate a model's BatchNorm statistics on fresh synthetic brains and keep the result only if the
held-out synthetic Dice improves (the real dev scans play no part in the decision).

    python bench/release/recalibrate_model.py runs/explog64/best.safetensors runs/explog64/recalibrated.safetensors
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from SegLossBrainLib.labels import load_label_table
from SegLossBrainLib.models.files import load_model, read_metadata, save_model
from SegLossBrainLib.paths import VALIDATION_SIZE, label_maps_dir, split_held_out
from SegLossBrainLib.synthesis.generator import SynthesisSettings, SyntheticBrainGenerator
from SegLossBrainLib.training.bn_recalibration import recalibrate_batchnorm
from SegLossBrainLib.training.validation import synthetic_dice


def held_out_mean(network, table, size, held_out: list[str]) -> float:
    scores = synthetic_dice(network, table, held_out, size, "cpu")
    return sum(v["mean"] for v in scores.values()) / len(scores)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--size", default=",".join(map(str, VALIDATION_SIZE)))
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split(","))
    table = load_label_table()
    network, _ = load_model(args.model)
    training_maps, held_out = split_held_out(sorted(label_maps_dir().glob("training_seg_*.nii.gz")))
    before = held_out_mean(network, table, size, held_out)
    generator = SyntheticBrainGenerator(training_maps, SynthesisSettings(patch_size=size))
    rng = torch.Generator().manual_seed(77)
    recalibrate_batchnorm(network, lambda: generator.batch(1, rng)[0], samples=args.samples)
    after = held_out_mean(network, table, size, held_out)
    print(json.dumps({"held_out_synthetic_dice_before": round(before, 4), "after": round(after, 4)}))
    if after > before:
        metadata = read_metadata(args.model)
        metadata = {k: v for k, v in metadata.items() if k not in ("sha256", "format_version")}
        metadata["batchnorm_recalibration"] = {"samples": args.samples, "patch_size": list(size),
                                               "held_out_dice_before": before, "held_out_dice_after": after}
        save_model(network, args.output, metadata, overwrite=True)
        print(f"kept: {args.output}")
    else:
        print("not kept: recalibration did not improve the held-out synthetic Dice")


if __name__ == "__main__":
    main()
