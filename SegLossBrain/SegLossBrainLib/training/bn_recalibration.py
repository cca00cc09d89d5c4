"""Re-estimate BatchNorm running statistics after training.

With batch 1 and a random contrast at every step, BatchNorm's running averages (momentum 0.1: about the
last ten samples) are a noisy estimate of the statistics the network meets at inference, which makes eval
mode worse than training mode. Recalibration resets them and takes the cumulative average over many fresh
samples, with the input noise and dropout switched off as they are at inference. Weights are untouched.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


@torch.no_grad()
def recalibrate_batchnorm(network: nn.Module, draw_batch, samples: int = 200) -> nn.Module:
    """``draw_batch()`` returns an input batch [B, 1, D, H, W]; returns the network in eval mode."""
    norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    noise = getattr(network, "noise_std", None)
    for module in norms:
        module.reset_running_stats()
        module.momentum = None  # cumulative moving average over all recalibration batches
    network.eval()
    for module in norms:
        module.train()
    if noise is not None:
        network.noise_std = 0.0
    try:
        for _ in range(samples):
            network(draw_batch())
    finally:
        for module, momentum in zip(norms, momenta):
            module.momentum = momentum
        if noise is not None:
            network.noise_std = noise
    return network.eval()


RECALIBRATION_DRAW_SEED = 31  # the same samples at every validation and for every run


def recalibrated_copy(network: nn.Module, generator, samples: int, seed: int = RECALIBRATION_DRAW_SEED) -> nn.Module:
    """A copy of ``network`` (eval mode) with BatchNorm statistics re-estimated on ``samples`` images drawn one at
    a time from ``generator`` (anything with ``batch(1, rng)``) with a generator seeded by ``seed``."""
    device = next(network.parameters()).device
    rng = torch.Generator().manual_seed(seed)
    return recalibrate_batchnorm(copy.deepcopy(network), lambda: generator.batch(1, rng)[0].to(device), samples)
