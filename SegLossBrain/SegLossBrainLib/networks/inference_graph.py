"""The network as inference runs it: every BatchNorm folded into the convolution before it.

In eval mode a BatchNorm is a fixed per-channel scale and shift, so ``conv -> BN`` equals one convolution with
rescaled weights and bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``). Folding removes one full pass over every
feature map: on 2 CPU cores the full-resolution layers are memory-bound, so that pass costs real time. The
result equals the unfolded network up to float rounding (tested). Training never uses this copy.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fused_for_inference(network: nn.Module) -> nn.Module:
    """An eval-mode copy of ``network`` with each ``Conv3d`` directly followed by a ``BatchNorm3d`` inside an
    ``nn.Sequential`` folded into one convolution (the BatchNorm becomes an identity). Other modules are kept."""
    fused = copy.deepcopy(network).eval()
    for module in fused.modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (name, conv), (bn_name, bn) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv3d) and isinstance(bn, nn.BatchNorm3d) and bn.track_running_stats:
                setattr(module, name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
    if next(network.parameters()).is_contiguous(memory_format=torch.channels_last_3d):
        fused = fused.to(memory_format=torch.channels_last_3d)
    return fused
