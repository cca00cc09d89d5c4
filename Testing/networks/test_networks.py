"""The paper's network: parameter count, shapes, the memory-saving head equals the paper's head, train-only
noise and dropout; V-Net shapes; building by name."""
import pytest
import torch

from SegLossBrainLib.networks import build_network
from SegLossBrainLib.networks.wong2018 import Wong2018Net


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_matches_the_paper():
    # Hand count of Block(n,k) convolutions (+bias) and BatchNorms over the 9 blocks and the 180->20 head:
    # the paper reports about 5 M parameters.
    net = Wong2018Net()
    assert count(net) == 4_989_812
    assert abs(count(net) - 4.99e6) < 0.01e6
    assert net.head.in_channels == 96 + 48 + 24 + 12 == 180


@pytest.mark.parametrize("shape", [(16, 16, 16), (32, 48, 16), (48, 32, 64)])
def test_output_shape_follows_input(shape):
    net = Wong2018Net().eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, *shape))
    assert out.shape == (2, 20, *shape)


def test_fused_head_equals_concatenated_head():
    torch.manual_seed(0)
    net = Wong2018Net().eval()
    x = torch.randn(1, 1, 32, 32, 48)
    with torch.no_grad():
        assert torch.allclose(net(x), net.forward_reference(x), atol=1e-4)


def test_gradients_of_fused_head_equal_the_papers_head():
    torch.manual_seed(0)
    net = Wong2018Net(noise_std=0, dropout=0).train()
    x = torch.randn(1, 1, 32, 32, 32)
    net(x).square().mean().backward()
    fused = net.head.weight.grad.clone()
    net.zero_grad()
    net.forward_reference(x).square().mean().backward()
    assert torch.allclose(fused, net.head.weight.grad, rtol=1e-3, atol=1e-6)


def test_noise_and_dropout_only_in_training():
    torch.manual_seed(0)
    net = Wong2018Net()
    x = torch.randn(1, 1, 32, 32, 32)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
    net.train()
    with torch.no_grad():
        assert not torch.allclose(net(x), net(x))


def test_size_not_multiple_of_16_is_refused():
    with pytest.raises(ValueError, match="divisible by 16"):
        Wong2018Net()(torch.randn(1, 1, 24, 32, 32))


def test_vnet_shapes_and_channels():
    net = build_network("vnet").eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 32, 32, 32)).shape == (1, 20, 32, 32, 32)
    first = net.encoders[0].convs[0][0]
    assert first.kernel_size == (5, 5, 5) and first.out_channels == 16
    assert net.bottom.convs[0][0].out_channels == 256
    assert isinstance(net.ups[0], torch.nn.ConvTranspose3d) and net.ups[0].stride == (2, 2, 2)


def test_unknown_architecture_is_named():
    with pytest.raises(ValueError, match="unknown architecture 'unet'.*wong2018"):
        build_network("unet")


def test_vnet_bf16_training_step_on_cpu_has_finite_gradients():
    """Regression: under CPU bf16 autocast the V-Net's bottom convolutions (4^3 for a 64^3 patch) got
    non-finite weight gradients from the backend, and the loss study's V-Net run diverged at step 3.
    Gradients must be finite and close to an fp32 step's. Only where the CPU has native bf16: elsewhere bf16 is
    emulated (this step took over 25 minutes on an AVX2-only CPU) and precision auto never chooses it."""
    from SegLossBrainLib.device import fast_precision
    from SegLossBrainLib.networks.vnet import VNet

    if fast_precision(torch.device("cpu")) != "bf16":
        pytest.skip("this CPU has no native bf16 (AVX512-BF16/AMX): emulated bf16 takes minutes here, and "
                    "--precision auto uses fp32 on such a CPU")

    torch.manual_seed(0)
    net = VNet()
    image, target = torch.rand(1, 1, 64, 64, 64), torch.randint(0, 20, (1, 64, 64, 64))
    gradients = {}
    for precision in ("bf16", "fp32"):
        net.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = net(image)
        torch.nn.functional.cross_entropy(logits.float(), target).backward()
        gradients[precision] = net.bottom.convs[2][0].weight.grad.clone()
    assert torch.isfinite(gradients["bf16"]).all()
    cosine = torch.nn.functional.cosine_similarity(gradients["bf16"].flatten(), gradients["fp32"].flatten(), dim=0)
    assert cosine > 0.9
