"""V-Net (Milletari, Navab, Ahmadi, 3DV 2016): the comparison backbone of Wong et al. 2018.

Five resolution stages with 16, 32, 64, 128, 256 channels; each stage is n x [5^3 conv -> PReLU] with a
residual connection from the stage input; down-sampling by 2^3 convolutions of stride 2, up-sampling by
2^3 transposed convolutions of stride 2; decoder stages take [up-sampled, encoder copy] concatenated; a
1^3 convolution gives the class logits. The paper used no normalisation; ``batch_norm=True`` (default)
adds BatchNorm after each convolution, which the small-batch training here needs to be stable.
"""
from __future__ import annotations

import torch
from torch import nn

ENCODER = ((16, 1), (32, 2), (64, 3), (128, 3))  # (channels, convolutions) per stage, top down
BOTTOM = (256, 3)
DECODER_CONVS = (3, 3, 2, 1)  # from the stage above the bottom up to the top


def _conv(in_channels: int, out_channels: int, batch_norm: bool, kernel: int = 5, stride: int = 1) -> nn.Sequential:
    layers = [nn.Conv3d(in_channels, out_channels, kernel, stride=stride, padding=(kernel - 1) // 2 if stride == 1 else 0)]
    if batch_norm:
        layers.append(nn.BatchNorm3d(out_channels))
    layers.append(nn.PReLU(out_channels))
    return nn.Sequential(*layers)


class ResidualStage(nn.Module):
    """n x (5^3 conv -> [BN] -> PReLU), plus the stage input (channel-matched by a 1^3 conv if needed)."""

    def __init__(self, in_channels: int, out_channels: int, convolutions: int, batch_norm: bool):
        super().__init__()
        self.convs = nn.Sequential(*[
            _conv(in_channels if i == 0 else out_channels, out_channels, batch_norm) for i in range(convolutions)
        ])
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv3d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x) + self.skip(x)


class VNet(nn.Module):
    architecture = "vnet"

    def __init__(self, in_channels: int = 1, num_classes: int = 20, batch_norm: bool = True):
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        channels = in_channels
        for width, convolutions in ENCODER:
            self.encoders.append(ResidualStage(channels, width, convolutions, batch_norm))
            self.downs.append(_conv(width, width * 2, batch_norm, kernel=2, stride=2))
            channels = width * 2
        self.bottom = ResidualStage(channels, BOTTOM[0], BOTTOM[1], batch_norm)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        channels = BOTTOM[0]
        for (width, _), convolutions in zip(reversed(ENCODER), DECODER_CONVS):
            self.ups.append(nn.ConvTranspose3d(channels, width, 2, stride=2))
            self.decoders.append(ResidualStage(width * 2, width * 2, convolutions, batch_norm))
            channels = width * 2
        self.head = nn.Conv3d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(s % 16 for s in x.shape[2:]):
            raise ValueError(f"VNet needs spatial sizes divisible by 16, got {tuple(x.shape[2:])}")
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        if torch.is_autocast_enabled("cpu") and x.device.type == "cpu":
            # The CPU bf16 kernel returns non-finite weight gradients for the bottom's 5^3 convolutions at 4^3
            # (a 64^3 patch) although their inputs and output gradients are finite: the loss study's V-Net run
            # diverged at step 3 (bench/experiments/vnet_bf16_check.py). The bottom is small; fp32 there costs little.
            with torch.autocast("cpu", enabled=False):
                x = self.bottom(x.float())
        else:
            x = self.bottom(x)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips)):
            x = decoder(torch.cat([up(x), skip], dim=1))
        return self.head(x)
