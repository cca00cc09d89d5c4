"""The layout of the Wong et al. 2018 network (widths and depths of its residual blocks), without torch: the
PyTorch module (``wong2018.py``) and the OpenVINO graph built from the same weights (``cpu_engine/``) both read it."""
from __future__ import annotations

ENCODER_BLOCKS = ((12, 1), (24, 2), (48, 3), (96, 3))  # (width, convolutions), levels 1 to 4
BOTTOM_BLOCK = (192, 3)
DECODER_BLOCKS = ((96, 3), (48, 3), (24, 2), (12, 1))  # from level 4 up to level 1
SIZE_MULTIPLE = 16  # four 2^3 poolings
BATCHNORM_EPS = 1e-5  # torch.nn.BatchNorm3d's default, which the module uses


def block_names() -> list[tuple[str, int]]:
    """(state-dict prefix, convolutions in its main branch) of every residual block, input to output."""
    return ([(f"encoders.{i}", depth) for i, (_, depth) in enumerate(ENCODER_BLOCKS)] + [("bottom", BOTTOM_BLOCK[1])]
            + [(f"decoders.{i}", depth) for i, (_, depth) in enumerate(DECODER_BLOCKS)])
