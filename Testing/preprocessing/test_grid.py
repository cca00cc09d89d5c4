"""Image <-> network grid: axes, planning, forward resampling, and probabilities back onto the input grid,
checked against SimpleITK's own resampling and against known phantom geometry (oblique, anisotropic)."""
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import phantom, rotation
from SegLossBrainLib.inference.segment import segment
from SegLossBrainLib.preprocessing import grid as grids

FLIP_PERMUTE = np.array([[0, 0, -1], [-1, 0, 0], [0, 1, 0]], dtype=float)  # e.g. a sagittal acquisition
OBLIQUE = rotation(12, -20, 25)


def test_closest_axes_of_a_permuted_flipped_direction():
    permutation, signs = grids.closest_axes(FLIP_PERMUTE.flatten())
    frame = FLIP_PERMUTE[:, permutation] * signs
    assert np.allclose(frame, np.eye(3))


def test_closest_axes_of_an_oblique_direction_is_near_identity():
    permutation, signs = grids.closest_axes((OBLIQUE @ FLIP_PERMUTE).flatten())
    frame = (OBLIQUE @ FLIP_PERMUTE)[:, permutation] * signs
    assert np.all(np.diag(frame) > 0.7)


@pytest.mark.parametrize("direction", [np.eye(3), FLIP_PERMUTE, OBLIQUE, OBLIQUE @ FLIP_PERMUTE])
def test_planned_grid_covers_the_head_and_is_a_multiple_of_16(direction):
    image, _ = phantom(direction=direction)
    planned = grids.plan_network_grid(image)
    assert all(s % 16 == 0 for s in planned.size)
    assert planned.spacing == 1.5
    # The head ellipsoid (radius 45 mm around the image centre) must lie inside the grid.
    centre = np.asarray(image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()]))
    frame = np.asarray(planned.direction).reshape(3, 3)
    low = frame.T @ np.asarray(planned.origin) - 0.75
    high = low + np.asarray(planned.size) * 1.5
    local = frame.T @ centre
    assert np.all(local - 44 >= low) and np.all(local + 44 <= high)


def test_long_field_of_view_keeps_the_top():
    image = sitk.Image([40, 40, 300], sitk.sitkFloat32)  # 300 mm along S: a head with neck
    image += 100.0
    planned = grids.plan_network_grid(image)
    assert planned.size[2] == grids.MAX_GRID_HEIGHT_VOXELS == 144
    top_of_image = image.TransformContinuousIndexToPhysicalPoint([0, 0, 299.5])[2]
    top_of_grid = planned.origin[2] + (planned.size[2] - 0.5) * 1.5
    assert abs(top_of_grid - top_of_image) < 1.5


@pytest.mark.parametrize("direction", [np.eye(3), FLIP_PERMUTE])
def test_shoulders_below_the_kept_slab_do_not_widen_the_grid(direction):
    """A 150 mm wide head on 300 mm wide shoulders, 320 mm of field along S (2 mm voxels): the grid keeps the top
    216 mm and is as wide as the head there (112 voxels: 150 mm rounded up to 16 x 1.5 mm), not the shoulders
    (which would give the 160-voxel cap)."""
    size = 160
    image = sitk.Image([size] * 3, sitk.sitkFloat32)
    image.SetSpacing([2.0] * 3)
    image.SetDirection([float(v) for v in np.asarray(direction).flatten()])
    k, j, i = np.meshgrid(*[np.arange(size)] * 3, indexing="ij")
    lps = np.stack([i, j, k], -1) * 2.0 @ np.asarray(direction).T  # origin 0: x left, y posterior, z superior
    x, y, z = (lps[..., a] - lps[..., a].min() for a in range(3))  # 0..318 mm along each axis
    head = (np.abs(x - 160) < 75) & (np.abs(y - 160) < 100) & (z >= 100)
    shoulders = (np.abs(x - 160) < 150) & (np.abs(y - 160) < 100) & (z < 100)
    array = np.where(head | shoulders, 100.0, 0.0).astype(np.float32)
    volume = sitk.GetImageFromArray(array)
    volume.CopyInformation(image)
    planned = grids.plan_network_grid(volume)
    assert planned.size == (112, 144, 144)  # x: 150 mm head; y: 200 mm; z: capped at 216 mm


@pytest.mark.parametrize("direction", [np.eye(3), OBLIQUE @ FLIP_PERMUTE])
def test_back_projection_equals_simpleitk_per_channel(direction):
    image, _ = phantom(size=(48, 40, 30), spacing=(1.7, 1.2, 2.6), direction=direction)
    planned = grids.plan_network_grid(image)
    torch.manual_seed(0)
    coarse = torch.randn(1, 5, *[max(2, s // 6) for s in planned.shape]) * 4
    probabilities = torch.softmax(torch.nn.functional.interpolate(coarse, size=planned.shape, mode="trilinear")[0], 0)
    labels, confidence = grids.probabilities_to_image(probabilities, planned, image, with_confidence=True)
    # Reference: SimpleITK linear resampling of each channel (outside the grid: background 1, others 0).
    reference_grid = planned.reference_image()
    channels = []
    for c in range(probabilities.shape[0]):
        channel = sitk.GetImageFromArray(probabilities[c].numpy())
        channel.CopyInformation(reference_grid)
        resampled = sitk.Resample(channel, image, sitk.Transform(), sitk.sitkLinear, 1.0 if c == 0 else 0.0)
        channels.append(sitk.GetArrayFromImage(resampled))
    channels = np.stack(channels)
    expected_labels, expected_confidence = channels.argmax(0), channels.max(0)
    assert labels.GetSize() == image.GetSize() and labels.GetDirection() == image.GetDirection()
    agreement = (sitk.GetArrayFromImage(labels) == expected_labels).mean()
    assert agreement > 0.9995  # only float ties may differ
    assert np.abs(sitk.GetArrayFromImage(confidence) - expected_confidence).max() < 1e-4


@pytest.mark.parametrize("direction,spacing", [
    (np.eye(3), (1.0, 1.0, 1.0)),
    (FLIP_PERMUTE, (0.9, 1.1, 2.4)),
    (OBLIQUE, (1.3, 0.8, 1.9)),
    (OBLIQUE @ FLIP_PERMUTE, (2.0, 1.0, 1.2)),
])
def test_a_structure_lands_where_it_was(threshold_net, direction, spacing):
    size = tuple(int(round(110 / s)) for s in spacing)
    origin = (-50.0, 40.0, -30.0)
    image, truth = phantom(size=size, spacing=spacing, direction=direction, origin=origin,
                           centre_mm=tuple(np.asarray(origin) + direction @ (np.asarray(size) * spacing / 2) +
                                           np.array([8.0, -6.0, 5.0])))
    result = segment(image, model=threshold_net, device="cpu", force=True)
    labels = sitk.GetArrayFromImage(result.labels)
    assert result.labels.GetSize() == image.GetSize()
    assert np.allclose(result.labels.GetSpacing(), image.GetSpacing())
    assert np.allclose(result.labels.GetOrigin(), image.GetOrigin())
    assert np.allclose(result.labels.GetDirection(), image.GetDirection())
    found = labels == 1
    dice = 2 * (found & truth).sum() / (found.sum() + truth.sum())
    assert dice > 0.9
    centroid_found = np.argwhere(found).mean(axis=0)[::-1]
    centroid_truth = np.argwhere(truth).mean(axis=0)[::-1]
    offset_mm = np.asarray(image.GetDirection()).reshape(3, 3) @ ((centroid_found - centroid_truth) * spacing)
    assert np.linalg.norm(offset_mm) < 1.0
    volume_ml = truth.sum() * np.prod(spacing) / 1000
    assert abs(result.volumes_ml["cerebral white matter"] - volume_ml) / volume_ml < 0.1


def test_integer_input_and_uint8_output(threshold_net):
    image, _ = phantom(dtype=sitk.sitkInt16)
    result = segment(image, model=threshold_net, device="cpu", force=True)
    assert result.labels.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(sitk.GetArrayFromImage(result.labels))) <= {0, 1}
