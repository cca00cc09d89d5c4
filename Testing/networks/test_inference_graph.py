"""The inference copy of the network (BatchNorm folded into the convolutions) computes what the network does."""
import pytest
import torch
from torch import nn

from SegLossBrainLib.networks import build_network
from SegLossBrainLib.networks.inference_graph import fused_for_inference


def _network_with_trained_statistics():
    torch.manual_seed(3)
    network = build_network("wong2018", num_classes=20)
    with torch.no_grad():  # BatchNorm statistics and affine parameters far from their identity defaults
        for module in network.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return network.eval()


def test_the_folded_network_gives_the_same_logits_and_keeps_the_original_unchanged():
    network = _network_with_trained_statistics()
    before = {k: v.clone() for k, v in network.state_dict().items()}
    fused = fused_for_inference(network)
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.inference_mode():
        expected, got = network(x), fused(x)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert not any(isinstance(m, nn.BatchNorm3d) for m in fused.modules())
    # the original keeps its 30: 21 conv layers of the blocks (1+2+3+3, 3, 3+3+2+1) and 9 shortcuts
    assert sum(isinstance(m, nn.BatchNorm3d) for m in network.modules()) == 30
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())


def test_a_channels_last_network_stays_channels_last():
    network = _network_with_trained_statistics().to(memory_format=torch.channels_last_3d)
    fused = fused_for_inference(network)
    weight = next(m for m in fused.modules() if isinstance(m, nn.Conv3d)).weight
    assert weight.is_contiguous(memory_format=torch.channels_last_3d)
