"""BatchNorm recalibration: running statistics become the average over the given batches, weights untouched,
noise and dropout off while measuring."""
import torch

from SegLossBrainLib.networks.wong2018 import Wong2018Net
from SegLossBrainLib.training.bn_recalibration import recalibrate_batchnorm


def test_running_mean_is_the_average_of_batch_means():
    torch.manual_seed(0)
    net = Wong2018Net()
    batches = [torch.randn(1, 1, 32, 32, 32) * (i + 1) + i for i in range(4)]
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    feeder = iter(batches)
    recalibrate_batchnorm(net, lambda: next(feeder), samples=4)
    first_bn = net.encoders[0].main[1]
    # Independent expectation: the first BN sees conv(x); its per-channel batch means, averaged over batches.
    conv = net.encoders[0].main[0]
    with torch.no_grad():
        expected = torch.stack([conv(b).mean(dim=(0, 2, 3, 4)) for b in batches]).mean(0)
    assert torch.allclose(first_bn.running_mean, expected, atol=1e-5)
    assert first_bn.momentum == 0.1 and net.noise_std == 1.0 and not net.training
    for name, value in net.state_dict().items():
        if name in weights:
            assert torch.equal(value, weights[name]), name
