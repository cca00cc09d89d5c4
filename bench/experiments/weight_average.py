"""Average the weights of models fine-tuned from one ancestor (a "model soup"), as a candidate to judge.

    python bench/experiments/weight_average.py OUT.safetensors MODEL_A.safetensors MODEL_B.safetensors [...]

Models continued from the same weights with a small learning rate and frozen BatchNorm stay in one basin, where
the average of their weights often scores at least as well as either and costs nothing at inference. Every input
is checked (checksum, label table, architecture) as ``seglossbrain`` checks a model; the result's metadata is
the first model's, with the averaged files and their sha256 recorded under ``weight_average_of``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from SegLossBrainLib.models.files import load_model, save_model, sha256_of


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the averaged model's .safetensors path (not overwritten)")
    parser.add_argument("models", nargs="+", help="two or more model files of one architecture")
    args = parser.parse_args(argv)
    if len(args.models) < 2:
        parser.error("give at least two models to average")
    networks = [load_model(path) for path in args.models]
    architectures = {metadata.get("architecture") for _, metadata in networks}
    if len(architectures) != 1:
        parser.error(f"the models have different architectures: {sorted(map(str, architectures))}")
    first, metadata = networks[0]
    states = [network.state_dict() for network, _ in networks]
    averaged = {}
    for name, value in states[0].items():
        if value.is_floating_point():
            averaged[name] = torch.stack([state[name].float() for state in states]).mean(0).to(value.dtype)
        else:  # counters such as num_batches_tracked: the first model's
            averaged[name] = value
    first.load_state_dict(averaged)
    metadata = {key: value for key, value in metadata.items() if key != "sha256"}
    metadata["weight_average_of"] = [{"file": Path(path).name, "sha256": sha256_of(path)} for path in args.models]
    print(save_model(first, args.out, metadata))


if __name__ == "__main__":
    main()
