"""What one fine-tuning step costs, and the cheaper steps considered (issue 31): seconds per training step of the
Wong et al. network for the full network, a frozen encoder, only the top block and head trained, and smaller
patches; median of 3 after a warm-up step.

    python bench/speed/finetune_step_cost.py [--threads 2] [--precision fp32|bf16]
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python bench/speed/finetune_step_cost.py   # a CPU without AVX-512

A synthetic step (random image and labels, cross-entropy): the network's cost, not the sampler's.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from SegLossBrainLib.networks.wong2018 import Wong2018Net

VARIANTS = (("full network (the default)", 96, ()),
            ("encoder frozen (no backward through it)", 96, ("encoders",)),
            ("only the level-1 decoder block and the head trained", 96, ("encoders", "bottom", "decoders[:3]")),
            ("80^3 patch", 80, ()),
            ("64^3 patch", 64, ()))


def frozen_parts(network: Wong2018Net, names) -> list:
    parts = []
    for name in names:
        parts += list(network.decoders[:3]) if name == "decoders[:3]" else [getattr(network, name)]
    return parts


def step_seconds(size: int, frozen, precision: str, repeats: int = 3) -> float:
    network = Wong2018Net(noise_std=0.0)
    network.train()
    for module in network.modules():  # fine-tuning keeps BatchNorm statistics
        if isinstance(module, torch.nn.BatchNorm3d):
            module.eval()
    for part in frozen_parts(network, frozen):
        part.requires_grad_(False)
    optimiser = torch.optim.Adam([p for p in network.parameters() if p.requires_grad], 1e-4)
    image, labels = torch.rand(1, 1, size, size, size), torch.randint(0, 20, (1, size, size, size))
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            logits = network(image)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"| step ({args.precision}, {args.threads} threads) | seconds | share of the full step |\n|---|---|---|")
    full = None
    for name, size, frozen in VARIANTS:
        seconds = step_seconds(size, frozen, args.precision)
        full = full or seconds
        print(f"| {name} | {seconds:.2f} | {seconds / full:.2f} |", flush=True)


if __name__ == "__main__":
    main()
