"""Soft targets for real labelled scans: each structure's share of every network voxel (partial volume),
checked against hand-computed shares on a known geometry, and carried through patches and mirroring."""
import numpy as np
import SimpleITK as sitk
import torch

from SegLossBrainLib.training.labelled_scans import PairSampler, TrainingPair, soft_targets


def _image(array, spacing=(1.0, 1.0, 1.0), direction=None):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    if direction is not None:
        image.SetDirection(direction)
    return image


def test_a_boundary_between_source_voxels_gives_the_linear_share():
    # x index 0..4 is structure 2, 5..11 background: the boundary lies at x = 4.5 mm. Target voxels every
    # 1.5 mm from x = 0 sit at 0, 1.5, 3, 4.5, 6, 7.5 mm: shares 1, 1, 1, 0.5, 0, 0 of structure 2.
    labels = np.zeros((4, 4, 12), np.uint8)
    labels[..., :5] = 2
    reference = _image(np.zeros((2, 2, 6), np.float32), spacing=(1.5, 1.0, 1.0))
    shares = soft_targets(_image(labels), reference, num_classes=3).float()
    assert shares.shape == (3, 2, 2, 6) and shares.dtype == torch.float32
    np.testing.assert_allclose(shares[2, 0, 0].numpy(), [1, 1, 1, 0.5, 0, 0], atol=1e-3)
    np.testing.assert_allclose(shares[0, 0, 0].numpy(), [0, 0, 0, 0.5, 1, 1], atol=1e-3)
    assert float(shares[1].abs().max()) == 0.0


def test_shares_sum_to_one_on_an_oblique_grid_and_outside_is_background():
    k, j, i = np.meshgrid(*[np.arange(20)] * 3, indexing="ij")
    labels = np.select([(i - 10) ** 2 + (j - 10) ** 2 + (k - 10) ** 2 < 16, i < 10], [1, 2], 0).astype(np.uint8)
    angle = np.deg2rad(30)
    direction = (np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0, 0, 0, 1)
    reference = _image(np.zeros((20, 20, 20), np.float32), spacing=(1.5, 1.5, 1.5), direction=direction)
    shares = soft_targets(_image(labels), reference, num_classes=3).float()
    np.testing.assert_allclose(shares.sum(0).numpy(), 1.0, atol=2e-3)
    # the far corner of the rotated 30 mm grid lies outside the 20 mm labelmap: all background
    assert float(shares[0, -1, -1, -1]) == 1.0
    # the sphere (r = 4 mm, 268 mm^3) keeps its volume within a few percent on the coarser, rotated grid
    assert abs(float(shares[1].sum()) * 1.5 ** 3 - 4 / 3 * np.pi * 4 ** 3) < 0.1 * 268


def _pair(soft):
    labels = soft.argmax(0)
    image = torch.linspace(0.1, 1, labels.numel()).reshape(1, *labels.shape)
    return TrainingPair("case", "img", "lab", "", "", "index", image, labels, [1, 2], soft.half())


def test_patches_reaching_outside_the_scan_are_background_and_mirror_with_the_image():
    soft = torch.zeros(3, 8, 8, 8)
    soft[0], soft[1, :, :, :3], soft[2, :, :, 3:] = 0.25, 0.75, 0.75
    sampler = PairSampler([_pair(soft)], patch_size=(16, 16, 16), augment=False)
    images, targets = sampler.batch(2, torch.Generator().manual_seed(0))
    assert targets.shape == (2, 3, 16, 16, 16) and targets.dtype == torch.float32
    np.testing.assert_allclose(targets.sum(1).numpy(), 1.0, atol=1e-3)
    padded = images[0, 0] == 0  # the 8^3 scan is centred in the 16^3 window: the rest is padding
    assert float(targets[0, 0][padded].min()) == 1.0
    # with augmentation on, a left-right mirror flips the shares with the image
    augmenting = PairSampler([_pair(soft)], patch_size=(8, 8, 8), augment=True)
    rng = torch.Generator().manual_seed(1)
    mirrored = 0
    for _ in range(12):
        _, target = augmenting.sample(rng)
        mirrored += float(target[1, 0, 0, -1]) > 0.5
        assert float(target[1, 0, 0, 0]) > 0.5 or float(target[1, 0, 0, -1]) > 0.5
    assert 0 < mirrored < 12
