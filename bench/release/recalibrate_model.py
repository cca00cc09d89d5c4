"""Recalibrate a model's BatchNorm statistics on fresh synthetic brains and keep the result only if the
held-out synthetic Dice improves (the real dev scans play no part in the decision).

    python bench/release/recalibrate_model.py runs/explog64/best.safetensors runs/explog64/recalibrated.safetensors
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from SegLossBrainLib.training.bn_recalibration import recalibrate_batchnorm
from SegLossBrainLib.labels import load_label_table
from SegLossBrainLib.models.files import load_model, read_metadata, save_model
from SegLossBrainLib.synthesis.generator import SynthesisSettings, SyntheticBrainGenerator
from SegLossBrainLib.training.validation import synthetic_dice

MAPS = Path(__file__).resolve().parents[3] / "shared" / "data" / "synthseg_label_maps"
HELD_OUT = ("training_seg_19.nii.gz", "training_seg_20.nii.gz")


def held_out_mean(network, table, size) -> float:
    scores = synthetic_dice(network, table, [str(MAPS / name) for name in HELD_OUT], size, "cpu")
    return sum(v["mean"] for v in scores.values()) / len(scores)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--size", default="112,144,112")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split(","))
    table = load_label_table()
    network, _ = load_model(args.model)
    before = held_out_mean(network, table, size)
    training_maps = sorted(str(p) for p in MAPS.glob("training_seg_*.nii.gz") if p.name not in HELD_OUT)
    generator = SyntheticBrainGenerator(training_maps, SynthesisSettings(patch_size=size))
    rng = torch.Generator().manual_seed(77)
    recalibrate_batchnorm(network, lambda: generator.batch(1, rng)[0], samples=args.samples)
    after = held_out_mean(network, table, size)
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
