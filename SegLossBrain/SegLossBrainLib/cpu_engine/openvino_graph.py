"""The Wong et al. 2018 network as an OpenVINO graph, written from the model file's arrays.

The same computation as ``networks/wong2018.py`` in eval mode: each BatchNorm folded into the convolution before
it (as ``networks/inference_graph.py`` does for PyTorch), residual blocks, 2^3 max pooling, nearest x2
upsampling, concatenated skips, and the deep-supervision head applied per level and summed coarse to fine (a 1^3
convolution commutes with nearest upsampling), then a softmax over the classes. Tests hold it to PyTorch's output.
"""
from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset1 as ops1
import openvino.opset13 as ops

from ..models.files import ModelError
from ..networks.wong2018_layout import BATCHNORM_EPS, DECODER_BLOCKS, block_names

_BATCHNORM_PARTS = ("weight", "bias", "running_mean", "running_var")


def expected_tensor_names() -> set[str]:
    """Every tensor a wong2018 model file holds (the PyTorch module's state-dict names)."""
    names = {"head.weight", "head.bias"}
    for prefix, depth in block_names():
        convolutions = [(f"main.{3 * i}", f"main.{3 * i + 1}") for i in range(depth)] + [("shortcut.0", "shortcut.1")]
        for conv, norm in convolutions:
            names |= {f"{prefix}.{conv}.weight", f"{prefix}.{conv}.bias"}
            names |= {f"{prefix}.{norm}.{part}" for part in (*_BATCHNORM_PARTS, "num_batches_tracked")}
    return names


def check_tensor_names(weights: dict, name: str) -> None:
    missing, unexpected = sorted(expected_tensor_names() - set(weights)), sorted(set(weights) - expected_tensor_names())
    if missing or unexpected:
        raise ModelError(f"model file {name} does not fit architecture 'wong2018': missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")


def _folded(weights: dict, conv: str, norm: str) -> tuple[np.ndarray, np.ndarray]:
    """Convolution weight and bias with the BatchNorm after it folded in (eval mode: a per-channel affine map)."""
    weight, bias = (weights[f"{conv}.{part}"].astype(np.float32) for part in ("weight", "bias"))
    gamma, beta, mean, var = (weights[f"{norm}.{part}"].astype(np.float32) for part in _BATCHNORM_PARTS)
    scale = gamma / np.sqrt(var + BATCHNORM_EPS)
    return weight * scale[:, None, None, None, None], (bias - mean) * scale + beta


def _convolution(x, weight: np.ndarray, bias: np.ndarray | None = None, name: str = ""):
    """A convolution named as the PyTorch module's (profiles and quantisation tools can address it)."""
    pad = [weight.shape[-1] // 2] * 3
    y = ops.convolution(x, ops.constant(weight), [1, 1, 1], pad, pad, [1, 1, 1], name=name or None)
    return y if bias is None else ops.add(y, ops.constant(bias.reshape(1, -1, 1, 1, 1)))


def _residual_block(x, weights: dict, prefix: str, depth: int):
    main = x
    for i in range(depth):
        conv = f"{prefix}.main.{3 * i}"
        main = ops.relu(_convolution(main, *_folded(weights, conv, f"{prefix}.main.{3 * i + 1}"), name=conv))
    shortcut = ops.relu(_convolution(x, *_folded(weights, f"{prefix}.shortcut.0", f"{prefix}.shortcut.1"),
                                     name=f"{prefix}.shortcut.0"))
    return ops.add(main, shortcut)


def _upsample(x):
    """x2 nearest neighbour on the three spatial axes, as ``F.interpolate(scale_factor=2, mode="nearest")``."""
    return ops.interpolate(x, ops.constant(np.array([2, 2, 2], np.float32)), "nearest", "scales",
                           axes=ops.constant(np.array([2, 3, 4], np.int64)), nearest_mode="floor",
                           coordinate_transformation_mode="asymmetric")


def build_graph(weights: dict, shape: tuple[int, int, int]) -> ov.Model:
    """The network for one input grid ``shape`` (D, H, W; multiples of 16): input ``image`` [1, 1, D, H, W]
    float32, output the softmax probabilities [1, classes, D, H, W]. A static shape lets OpenVINO pick its
    kernels at compile time (a dynamic one made the first inference 1.5-2.9 s slower, BENCHMARKS.md)."""
    image = ops.parameter([1, 1, *shape], np.float32, name="image")
    blocks = block_names()
    levels = len(DECODER_BLOCKS)
    x, skips = image, []
    for prefix, depth in blocks[:levels]:  # encoder
        x = _residual_block(x, weights, prefix, depth)
        skips.append(x)
        # opset1's MaxPool has no indices output: opset8's failed to compile under ONEDNN_MAX_CPU_ISA=AVX2
        x = ops1.max_pool(x, [2, 2, 2], [0, 0, 0], [0, 0, 0], [2, 2, 2])
    x = _residual_block(x, weights, *blocks[levels])  # bottom
    outputs = []
    for (prefix, depth), skip in zip(blocks[levels + 1:], reversed(skips)):  # decoder, level 4 up to level 1
        x = _residual_block(ops.concat([_upsample(x), skip], 1), weights, prefix, depth)
        outputs.append(x)
    head = weights["head.weight"].astype(np.float32)
    logits, start = None, 0
    for index, (output, (width, _)) in enumerate(zip(outputs, DECODER_BLOCKS)):
        part = _convolution(output, head[:, start:start + width], name=f"head.level{levels - index}")
        start += width
        logits = part if logits is None else ops.add(part, _upsample(logits))
    logits = ops.add(logits, ops.constant(weights["head.bias"].astype(np.float32).reshape(1, -1, 1, 1, 1)))
    return ov.Model([ops.softmax(logits, 1)], [image], "wong2018")
