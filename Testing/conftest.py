"""Shared fixtures: small synthetic volumes with known geometry, a tiny random model file, ../shared data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SegLossBrainLib.paths import find_data_dir

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = find_data_dir()  # $SEGLOSSBRAIN_DATA, or ../shared/data beside this checkout; None when absent
needs_shared_data = pytest.mark.skipif(SHARED_DATA is None, reason="no data folder ($SEGLOSSBRAIN_DATA or ../shared/data)")


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    ax, ay, az = np.radians([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def phantom(size=(70, 60, 50), spacing=(1.3, 1.1, 2.0), direction=None, origin=(-40.0, 30.0, -20.0),
            centre_mm=(5.0, -8.0, 12.0), radius_mm=18.0, dtype=sitk.sitkFloat32) -> tuple[sitk.Image, np.ndarray]:
    """A head-like ellipsoid of moderate intensity with a bright sphere of ``radius_mm`` at physical point
    ``centre_mm`` (LPS). Returns (image, boolean truth mask of the sphere on the image grid)."""
    image = sitk.Image([int(s) for s in size], dtype)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection([float(v) for v in np.asarray(direction).flatten()])
    k, j, i = np.meshgrid(*[np.arange(n) for n in reversed(size)], indexing="ij")
    index = np.stack([i, j, k], axis=-1).reshape(-1, 3).astype(float)
    matrix = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(spacing)
    physical = index @ matrix.T + np.asarray(origin)
    centre = physical.mean(axis=0)
    head = (((physical - centre) / np.array([45.0, 45.0, 45.0])) ** 2).sum(axis=1) < 1
    sphere = np.linalg.norm(physical - np.asarray(centre_mm), axis=1) < radius_mm
    values = np.where(sphere, 1000.0, np.where(head, 300.0, 0.0)).reshape(tuple(reversed(size)))
    values += np.random.default_rng(0).normal(0, 5, values.shape)
    result = sitk.GetImageFromArray(values.astype(np.float32))
    result.CopyInformation(image)
    return sitk.Cast(result, dtype), sphere.reshape(tuple(reversed(size)))


class ThresholdNet(torch.nn.Module):
    """A stand-in network with a known answer: class 1 where the normalised intensity is above 0.6, else
    background. Lets geometry tests check where a structure lands without a trained model."""

    architecture = "threshold"

    def __init__(self, num_classes: int = 20):
        super().__init__()
        self.num_classes = num_classes
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.full((x.shape[0], self.num_classes, *x.shape[2:]), -20.0)
        logits[:, 0] = 0.0
        logits[:, 1] = 40.0 * (x[:, 0] - 0.6)
        return logits


@pytest.fixture
def threshold_net():
    return ThresholdNet()


@pytest.fixture(scope="session")
def random_model_file(tmp_path_factory) -> Path:
    """A randomly initialised Wong 2018 model saved as a model file (never presented as trained)."""
    from SegLossBrainLib.models.files import save_model
    from SegLossBrainLib.networks import build_network

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "random.safetensors"
    save_model(build_network("wong2018"), path, {"loss": {"name": "none"}, "note": "random weights, tests only"})
    return path
