"""The 3D network of Wong et al., MICCAI 2018.

K. C. L. Wong, M. Moradi, H. Tang, T. Syeda-Mahmood. "3D Segmentation with Exponential Logarithmic
Loss for Highly Unbalanced Object Sizes", MICCAI 2018, arXiv:1809.00076.

Five levels; every level is a residual ``Block(n, k)``: ``k`` x [3^3 conv -> BatchNorm -> ReLU] plus a
parallel [1^3 conv -> BatchNorm -> ReLU] branch from the block input, the two summed. 2^3 max-pooling
down, parameter-free x2 upsampling up (nearest neighbour, as Keras' UpSampling3D), skip connections by
concatenation, additive Gaussian noise (std 1) on the input and Dropout(0.5) before the bottom block
(both only while training), and deep supervision: the decoder outputs of levels 4, 3 and 2, upsampled to
full size and concatenated with the level-1 output (180 channels), go through one 1^3 convolution to the
class logits.

The paper's noise has std 1 on z-scored images (unit variance). Our inputs are percentile-normalised to
[0, 1] instead, so the noise std is taken in units of each input's own standard deviation: the same
signal-to-noise ratio as the paper, whatever the normalisation.

The head is computed without materialising the 180-channel full-resolution tensor: a 1^3 convolution is
linear per voxel and commutes with nearest-neighbour upsampling, so each level's share of the head's
weights is applied at that level's own resolution and the small class maps are upsampled and summed. The
result equals the concatenate-then-convolve form (``forward_reference``) to float rounding, at a fraction
of the memory (the 180 x 128^3 float32 tensor alone would take 1.5 GB).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .wong2018_layout import BOTTOM_BLOCK, DECODER_BLOCKS, ENCODER_BLOCKS, SIZE_MULTIPLE


class ResidualBlock(nn.Module):
    """Block(n, k): k x (conv3 -> BN -> ReLU) summed with a (conv1 -> BN -> ReLU) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, depth: int):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(depth):
            layers += [
                nn.Conv3d(channels, out_channels, 3, padding=1),
                nn.BatchNorm3d(out_channels),
                nn.ReLU(inplace=True),
            ]
            channels = out_channels
        self.main = nn.Sequential(*layers)
        self.shortcut = nn.Sequential(
            nn.Conv3d(in_channels, out_channels, 1), nn.BatchNorm3d(out_channels), nn.ReLU(inplace=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.shortcut(x)


class Wong2018Net(nn.Module):
    """The paper's network. Input ``[B, in_channels, D, H, W]`` with D, H, W divisible by 16;
    output logits ``[B, num_classes, D, H, W]``."""

    architecture = "wong2018"

    def __init__(self, in_channels: int = 1, num_classes: int = 20, noise_std: float = 1.0, dropout: float = 0.5):
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.noise_std = noise_std
        self.encoders = nn.ModuleList()
        channels = in_channels
        for width, depth in ENCODER_BLOCKS:
            self.encoders.append(ResidualBlock(channels, width, depth))
            channels = width
        self.dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        self.bottom = ResidualBlock(channels, *BOTTOM_BLOCK)
        channels = BOTTOM_BLOCK[0]
        self.decoders = nn.ModuleList()
        for (width, depth), (skip, _) in zip(DECODER_BLOCKS, reversed(ENCODER_BLOCKS)):
            self.decoders.append(ResidualBlock(channels + skip, width, depth))
            channels = width
        # Deep-supervision head on [level4, level3, level2, level1] = 96 + 48 + 24 + 12 = 180 channels.
        self.head = nn.Conv3d(sum(w for w, _ in DECODER_BLOCKS), num_classes, 1)

    def _decoder_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        shape = x.shape[2:]
        if any(s % SIZE_MULTIPLE for s in shape):
            raise ValueError(
                f"Wong2018Net needs spatial sizes divisible by {SIZE_MULTIPLE}, got {tuple(shape)}: "
                "pad or crop the input grid to a multiple of 16."
            )
        if self.training and self.noise_std > 0:
            scale = x.detach().flatten(1).std(dim=1).view(-1, *[1] * (x.dim() - 1))
            x = x + torch.randn_like(x) * (self.noise_std * scale)
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = F.max_pool3d(x, 2)
        x = self.bottom(self.dropout(x))
        outputs = []
        for decoder, skip in zip(self.decoders, reversed(skips)):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = decoder(torch.cat([x, skip], dim=1))
            outputs.append(x)
        return outputs  # levels 4, 3, 2, 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = self._decoder_outputs(x)
        weight = self.head.weight.flatten(1)  # [classes, 180]
        logits = None
        start = 0
        for level_output in outputs:  # coarse to fine, so each partial sum is upsampled once per level
            width = level_output.shape[1]
            part = torch.einsum("oc,bc...->bo...", weight[:, start : start + width], level_output)
            start += width
            if logits is not None:
                logits = F.interpolate(logits, size=part.shape[2:], mode="nearest")
                part = part + logits
            logits = part
        return logits + self.head.bias.view(1, -1, 1, 1, 1)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The head exactly as drawn in the paper (concatenate at full size, then 1^3 conv); for tests."""
        outputs = self._decoder_outputs(x)
        full = outputs[-1].shape[2:]
        upsampled = [F.interpolate(o, size=full, mode="nearest") for o in outputs[:-1]] + [outputs[-1]]
        return self.head(torch.cat(upsampled, dim=1))
