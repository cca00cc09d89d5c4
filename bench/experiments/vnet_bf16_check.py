"""Reproduce the loss study's V-Net divergence under bf16 autocast on the CPU (docs/LOSS_STUDY.md).

A fresh V-Net, one 64^3 input, Adam lr 1e-3, plain cross-entropy: prints, per step, whether the output is finite
and which parameters got a non-finite gradient. Before VNet ran its bottom stage in fp32 under CPU autocast,
the first bf16 backward gave a non-finite weight gradient in a bottom convolution (torch 2.13.0+cpu), although
that convolution's input and output gradient were finite and fp32 recomputed from them was finite: a backend
kernel problem, not the loss. This script checks that it stays fixed on a new torch.

    python bench/experiments/vnet_bf16_check.py [--fp32] [--steps 3]
"""
import argparse

import torch

from SegLossBrainLib.networks.vnet import VNet


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fp32", action="store_true")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    network, image = VNet(), torch.rand(1, 1, 64, 64, 64)
    target = torch.randint(0, 20, (1, 64, 64, 64))
    optimiser = torch.optim.Adam(network.parameters(), 1e-3)
    for step in range(args.steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=not args.fp32):
            logits = network(image)
        logits = logits[0] if isinstance(logits, (tuple, list)) else logits
        loss = torch.nn.functional.cross_entropy(logits.float(), target)
        optimiser.zero_grad()
        loss.backward()
        bad = [n for n, p in network.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        print(f"step {step}: output finite {bool(torch.isfinite(logits).all())}, loss {loss.item():.3f}, "
              f"non-finite gradients in {bad[:4] or 'none'}{' ...' if len(bad) > 4 else ''}")
        optimiser.step()
    print(torch.__version__, "bf16" if not args.fp32 else "fp32")


if __name__ == "__main__":
    main()
