"""The torch-free way between an image and the network: network_input, and probabilities_to_image (numpy, with
shortcuts) against a brute-force trilinear interpolation of every class followed by argmax."""
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import phantom, rotation
from SegLossBrainLib.preprocessing import back_projection
from SegLossBrainLib.preprocessing import grid as grids

FLIP_PERMUTE = np.array([[0, 0, -1], [-1, 0, 0], [0, 1, 0]], dtype=float)


def test_grid_and_intensity_import_without_torch():
    code = ("import sys; import SegLossBrainLib.preprocessing.grid, SegLossBrainLib.preprocessing.intensity; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=environment)


def test_network_input_is_to_network_without_torch():
    image, _ = phantom(direction=rotation(10, -5, 20), dtype=sitk.sitkInt16)
    planned = grids.plan_network_grid(image)
    array = grids.network_input(image, planned)
    assert array.dtype == np.float32 and array.flags["C_CONTIGUOUS"] and array.shape == (1, 1, *planned.shape)
    tensor = grids.to_network(image, planned)
    assert isinstance(tensor, torch.Tensor) and np.array_equal(tensor.numpy(), array)


def brute_force(probabilities: np.ndarray, planned, image):
    """Every class interpolated at every input voxel (padding: background), in the same float32 operations."""
    maps = back_projection._axis_maps(image, planned)
    volume = np.pad(probabilities, [(0, 0)] + [(1, 1)] * 3)
    volume[0][np.pad(np.zeros(probabilities.shape[1:], bool), 1, constant_values=True)] = 1
    array_axis = {0: 3, 1: 2, 2: 1}
    volume = volume.transpose(0, *[array_axis[maps[b][0]] for b in (2, 1, 0)])
    lower, weights = {}, {}
    for b, length in zip(range(3), volume.shape[:0:-1]):
        lower[b], _, weight = back_projection._interpolation_indices(maps[b][1], length - 2)
        weights[b] = (1 - weight, weight)
    result = 0
    for dk in (0, 1):
        for dj in (0, 1):
            for di in (0, 1):
                w = (weights[2][dk][:, None, None] * weights[1][dj][None, :, None]) * weights[0][di][None, None, :]
                corner = volume[:, lower[2] + dk][:, :, lower[1] + dj][:, :, :, lower[0] + di]
                result = result + corner * w
    return result.argmax(axis=0), result.max(axis=0)


@pytest.mark.parametrize("direction,spacing,kind", [
    (np.eye(3), (1.0, 1.0, 1.0), "softmax"),
    (FLIP_PERMUTE, (0.9, 1.1, 2.4), "one-hot"),
    (rotation(12, -20, 25), (1.3, 0.8, 1.9), "ties"),
    (rotation(-8, 15, 30) @ FLIP_PERMUTE, (2.0, 1.0, 1.2), "softmax"),
])
def test_back_projection_equals_brute_force(direction, spacing, kind):
    image, _ = phantom(size=tuple(int(round(90 / s)) for s in spacing), spacing=spacing, direction=direction)
    planned = grids.plan_network_grid(image)
    rng = np.random.default_rng(3)
    shape = planned.shape
    if kind == "softmax":
        logits = rng.standard_normal((7, *[s // 8 for s in shape])).astype(np.float32) * 4
        logits = np.kron(logits, np.ones((1, 8, 8, 8), np.float32))
        probabilities = np.exp(logits - logits.max(0)) / np.exp(logits - logits.max(0)).sum(0)
    elif kind == "one-hot":  # exact ties halfway between labels; labels up to the grid's faces
        labels = np.kron(rng.integers(0, 6, [s // 4 for s in shape]), np.ones((4, 4, 4), int))
        probabilities = np.eye(6, dtype=np.float32)[labels].transpose(3, 0, 1, 2)
    else:  # few distinct values: ties between classes everywhere
        raw = rng.integers(0, 3, (5, *shape)).astype(np.float32)
        probabilities = raw / np.maximum(raw.sum(0), 1)
    expected_labels, expected_confidence = brute_force(probabilities.astype(np.float32), planned, image)
    for given in (probabilities, torch.from_numpy(probabilities)):
        labels, confidence = grids.probabilities_to_image(given, planned, image, with_confidence=True)
        assert labels.GetPixelID() == sitk.sitkUInt8 and confidence.GetPixelID() == sitk.sitkFloat32
        assert labels.GetSize() == image.GetSize() and labels.GetDirection() == image.GetDirection()
        assert np.array_equal(sitk.GetArrayFromImage(labels), expected_labels)
        assert np.abs(sitk.GetArrayFromImage(confidence) - expected_confidence).max() <= 1e-6
    # An isotropic grid reaching 60 mm past the image on every side: past the network grid, into the padding.
    isotropic = grids.isotropic_grid(image, 2.5)
    reference = sitk.Image([s + 48 for s in isotropic.GetSize()], sitk.sitkUInt8)
    reference.SetSpacing(isotropic.GetSpacing())
    reference.SetDirection(isotropic.GetDirection())
    reference.SetOrigin(isotropic.TransformContinuousIndexToPhysicalPoint([-24.0] * 3))
    labels, none = grids.probabilities_to_image(probabilities, planned, reference)
    assert none is None
    assert np.array_equal(sitk.GetArrayFromImage(labels), brute_force(probabilities, planned, reference)[0])
