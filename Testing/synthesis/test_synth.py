"""Tests of the synthetic training-pair generator (SegLossBrainLib.synthesis).

The phantom is an analytic head (nested ellipsoids + an off-centre left ventricle and hippocampus) defined in
LPS millimetres and voxelised on whatever grid a test needs, so axis-aligned and oblique label maps describe
the same anatomy. Expectations come from SimpleITK resampling, independent of the generator's own code.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import SHARED_DATA
from SegLossBrainLib.labels import LabelError, load_label_table
from SegLossBrainLib.paths import LABEL_MAPS
from SegLossBrainLib.synthesis.generator import LabelMapSource, SynthesisSettings, SyntheticBrainGenerator, known_generation_labels
from SegLossBrainLib.synthesis.geometry import rotation_matrix

SHARED_MAPS = SHARED_DATA / LABEL_MAPS if SHARED_DATA else Path("no data folder")
CENTRE_MM = np.array([3.3, -7.1, 12.6])  # phantom centre in LPS: an origin far from 0 catches offset bugs
SCALP = 511
PATCH = (32, 32, 32)  # 48 mm at 1.5 mm: the whole phantom


def phantom_labels(physical: np.ndarray) -> np.ndarray:
    """Generation labels at LPS points [..., 3] (mm, x = left)."""
    p = physical - CENTRE_MM
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    rho = np.sqrt((x / 22) ** 2 + (y / 20) ** 2 + (z / 17) ** 2)
    left = x > 0
    labels = np.zeros(rho.shape, dtype=np.int32)
    labels[rho < 1] = SCALP
    labels[rho < 0.88] = 24
    labels[rho < 0.76] = np.where(left, 3, 42)[rho < 0.76]
    labels[rho < 0.55] = np.where(left, 2, 41)[rho < 0.55]
    labels[np.linalg.norm(p - [6, -2, 1], axis=-1) < 4.5] = 4  # left lateral ventricle only
    labels[np.linalg.norm(p - [-7, 5, -5], axis=-1) < 3.0] = 53  # right hippocampus
    return labels


def make_image(direction: np.ndarray, size=48) -> sitk.Image:
    """Phantom voxelised at 1 mm on a grid with ``direction``, centred on the phantom."""
    index = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), axis=-1)[..., ::-1]  # [k,j,i] -> (i,j,k)
    origin = CENTRE_MM - direction @ np.full(3, (size - 1) / 2)
    physical = index @ direction.T + origin
    image = sitk.GetImageFromArray(phantom_labels(physical))
    image.SetOrigin(origin.tolist())
    image.SetDirection(direction.ravel().tolist())
    return image


def source_of(image: sitk.Image, **kwargs) -> LabelMapSource:
    affine = np.eye(4)
    affine[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return LabelMapSource.from_array(sitk.GetArrayFromImage(image), affine, **kwargs)


@pytest.fixture(scope="module")
def axial_image() -> sitk.Image:
    return make_image(np.eye(3))


@pytest.fixture(scope="module")
def axial(axial_image) -> LabelMapSource:
    return source_of(axial_image)


def plain(**kwargs) -> SynthesisSettings:
    return SynthesisSettings(patch_size=PATCH, **kwargs).without_augmentation()


def rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sitk_expected(image: sitk.Image, centre: np.ndarray) -> np.ndarray:
    """Generation labels resampled by SimpleITK nearest neighbour on the network patch around ``centre``."""
    reference = sitk.Image(list(PATCH[::-1]), sitk.sitkUInt8)
    reference.SetSpacing([1.5] * 3)
    reference.SetOrigin((centre - 1.5 * (np.array(PATCH[::-1]) - 1) / 2).tolist())
    resampled = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(resampled)


def test_identity_geometry_matches_simpleitk_resampling(axial_image, axial):
    _, target = SyntheticBrainGenerator([axial], plain()).sample(rng(0))
    # a patch larger than the brain is centred on the brain centroid when translation is 0
    expected = sitk_expected(axial_image, axial.brain_centroid)
    expected_index = load_label_table().map_freesurfer(expected)
    assert target.shape == PATCH and target.dtype == torch.int64
    np.testing.assert_array_equal(target.numpy(), expected_index)
    # non-brain tissue is generated (it has its own intensity) but its target is background
    assert (expected == SCALP).sum() > 1000
    assert (target.numpy()[expected == SCALP] == 0).all()


def test_t1_contrast_orders_tissues(axial):
    generator = SyntheticBrainGenerator([axial], plain(t1_fraction=1.0, bias_std=0.0, low_resolution_fraction=0.0))
    for seed in range(4):
        image, target = generator.sample(rng(seed))
        wm, cortex, ventricle = (float(image[0][target == i].mean()) for i in (1, 2, 3))
        assert wm > cortex > ventricle, (seed, wm, cortex, ventricle)


def test_value_ranges_and_labels(axial):
    generator = SyntheticBrainGenerator([axial], SynthesisSettings(patch_size=PATCH))
    for seed in range(4):
        image, target = generator.sample(rng(seed))
        assert image.shape == (1, *PATCH) and image.dtype == torch.float32
        assert torch.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
        assert float(image.max()) == pytest.approx(1.0)  # normalise_intensity ran last
        assert set(torch.unique(target).tolist()) <= {0, 1, 2, 3, 14, 16}


def test_batch_shapes(axial):
    images, targets = SyntheticBrainGenerator([axial, axial], SynthesisSettings(patch_size=PATCH)).batch(2, rng(3))
    assert images.shape == (2, 1, *PATCH) and targets.shape == (2, *PATCH)


def test_deterministic_under_seed(axial):
    generator = SyntheticBrainGenerator([axial], SynthesisSettings(patch_size=PATCH))
    a, b, c = generator.sample(rng(7)), generator.sample(rng(7)), generator.sample(rng(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])


def test_permuted_direction_gives_identical_pair(axial):
    # the training maps' own layout (LIA): same physical voxels, stored in another axis order and sign
    lia = np.array([[1, 0, 0], [0, 0, -1], [0, -1, 0]], dtype=float)
    permuted = source_of(make_image(lia))
    settings = plain(t1_fraction=1.0)
    a = SyntheticBrainGenerator([axial], settings).sample(rng(5))
    b = SyntheticBrainGenerator([permuted], settings).sample(rng(5))
    assert torch.equal(a[1], b[1])
    torch.testing.assert_close(a[0], b[0], atol=1e-4, rtol=0)


def test_oblique_direction_matches_axis_aligned(axial):
    oblique_image = make_image(rotation_matrix(np.deg2rad([20.0, -12.0, 30.0])), size=56)
    oblique = source_of(oblique_image)
    settings = plain()
    _, a = SyntheticBrainGenerator([axial], settings).sample(rng(1))
    _, b = SyntheticBrainGenerator([oblique], settings).sample(rng(1))
    a, b = a.numpy(), b.numpy()
    # exact against SimpleITK reading the oblique map through its direction cosines
    np.testing.assert_array_equal(b, load_label_table().map_freesurfer(sitk_expected(oblique_image,
                                                                                     oblique.brain_centroid)))
    # against the axis-aligned voxelisation of the same anatomy: two 1 mm voxelisations read at 1.5 mm disagree
    # only along boundaries (this small phantom is mostly boundary: its cortex is ~3 voxels thick)
    differ = a != b
    assert differ.sum() < 0.15 * (a > 0).sum()
    padded = np.pad(a, 1, mode="edge")
    for k, j, i in np.argwhere(differ):
        assert (padded[k:k + 3, j:j + 3, i:i + 3] != a[k, j, i]).any(), (k, j, i)
    for index in (1, 2, 3, 14, 16):
        dice = 2 * ((a == index) & (b == index)).sum() / ((a == index).sum() + (b == index).sum())
        assert dice > 0.8, (index, dice)


def test_geometry_augmentation_moves_the_patch(axial):
    generator = SyntheticBrainGenerator([axial], SynthesisSettings(patch_size=PATCH))
    _, plain_target = SyntheticBrainGenerator([axial], plain()).sample(rng(2))
    _, moved = generator.sample(rng(2))
    assert not torch.equal(plain_target, moved)
    assert (moved > 0).float().mean() > 0.05  # the patch still holds brain


def test_unknown_labels(axial_image):
    array = sitk.GetArrayFromImage(axial_image)
    array[:2, :2, :2], array[-2:, -2:, -2:] = 999, 1234
    with pytest.raises(LabelError, match=r"999, 1234.*unknown_labels='background'"):
        LabelMapSource.from_array(array, np.eye(4))
    source = LabelMapSource.from_array(array, np.eye(4), unknown_labels="background")
    assert 999 not in source.values and 1234 not in source.values
    assert {0, 2, 41, 24, SCALP} <= set(source.values.tolist())
    assert {0, 30, 62, 72, 25, 57, 136, 164, 502, 530, 77} <= known_generation_labels()


def test_load_from_file_reads_direction(tmp_path, axial):
    lia = np.array([[1, 0, 0], [0, 0, -1], [0, -1, 0]], dtype=float)
    image = make_image(lia)
    array = sitk.GetArrayFromImage(image)
    array[0, 0, 0] = 999  # unknown value: background by the settings' choice
    written = sitk.GetImageFromArray(array)
    written.CopyInformation(image)
    sitk.WriteImage(written, str(tmp_path / "head.nii.gz"))
    settings = plain(unknown_labels="background")
    _, from_file = SyntheticBrainGenerator([tmp_path / "head.nii.gz"], settings).sample(rng(4))
    _, reference = SyntheticBrainGenerator([axial], settings).sample(rng(4))
    assert torch.equal(from_file, reference)


def test_float_label_maps_accepted_and_fractions_rejected(axial_image):
    array = sitk.GetArrayFromImage(axial_image).astype(np.float32)
    assert len(LabelMapSource.from_array(array, np.eye(4)).values) == 9
    array[0, 0, 0] = 2.5
    with pytest.raises(LabelError, match="non-integer"):
        LabelMapSource.from_array(array, np.eye(4))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(patch_size=(64, 60, 64)), "multiple of 16"),
        (dict(patch_size=(64, 64)), "3 positive integers"),
        (dict(t1_fraction=1.5), "t1_fraction"),
        (dict(scale_range=(1.2, 0.8)), "scale_range"),
        (dict(rotation_deg=-1), "rotation_deg"),
        (dict(noise_std_max=-0.1), "noise_std_max"),
        (dict(max_resolution_mm=1.0), "max_resolution_mm"),
        (dict(deformation_control_points=(1, 4)), "deformation_control_points"),
        (dict(unknown_labels="ignore"), "unknown_labels"),
    ],
)
def test_settings_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SynthesisSettings(**kwargs)


def test_settings_accept_int_patch_size():
    assert SynthesisSettings(patch_size=48).patch_size == (48, 48, 48)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda(axial):
    image, target = SyntheticBrainGenerator([axial], SynthesisSettings(patch_size=PATCH), device="cuda").sample(rng(0))
    assert image.device.type == "cuda" and target.device.type == "cuda"
    assert image.shape == (1, *PATCH) and 0 <= float(image.min()) <= float(image.max()) <= 1


@pytest.mark.shared_data
@pytest.mark.skipif(not (SHARED_MAPS / "training_seg_01.nii.gz").is_file(), reason="../shared/data absent")
def test_real_label_map_patch_holds_most_structures():
    generator = SyntheticBrainGenerator([SHARED_MAPS / "training_seg_01.nii.gz"], SynthesisSettings(patch_size=96))
    image, target = generator.sample(rng(0))
    present = set(torch.unique(target).tolist()) - {0}
    assert len(present) >= 15, sorted(present)
    assert torch.isfinite(image).all() and image.shape == (1, 96, 96, 96)
