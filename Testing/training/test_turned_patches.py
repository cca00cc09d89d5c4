"""Real labelled scans' patches turned and scaled about their centre (``PairSampler(rotation_deg=, scaling=)``),
so that a network trained on one real scan does not learn its labels in that scan's pose only.

Expectations are geometric: a bar along one axis of the volume must come out along the direction the drawn
rotation maps it to, image and labels must be turned together, and the corners must be read from the volume."""
import numpy as np
import pytest
import torch

from SegLossBrainLib.cli import main
from SegLossBrainLib.models.files import read_metadata
from SegLossBrainLib.synthesis.geometry import rotation_matrix
from SegLossBrainLib.training.config import TrainingConfig
from SegLossBrainLib.training.labelled_scans import PairSampler, TrainingPair

from test_mixed_sampler import scene  # noqa: F401  (a pytest fixture)


def _pair(labels: np.ndarray) -> TrainingPair:
    image = torch.as_tensor(labels / 10.0, dtype=torch.float32)[None]
    return TrainingPair("bar", "image.nii.gz", "labels.nii.gz", "", "", "index", image,
                        torch.as_tensor(labels, dtype=torch.int64), sorted(set(labels.ravel().tolist()) - {0}))


def _bar_volume() -> np.ndarray:
    """64^3 volume: a bar (label 3) along the first axis through the centre, label 1 everywhere else inside a
    ball of radius 30, background outside it."""
    d, h, w = np.meshgrid(*[np.arange(64) - 31.5] * 3, indexing="ij")
    inside = np.sqrt(d ** 2 + h ** 2 + w ** 2) < 30
    bar = (np.abs(d) < 20) & (np.sqrt(h ** 2 + w ** 2) < 3)
    return np.where(bar, 3, np.where(inside, 1, 0)).astype(np.int64)


def test_a_bar_comes_out_along_the_turned_direction_and_image_follows_labels():
    sampler = PairSampler([_pair(_bar_volume())], (32, 32, 32), rotation_deg=30.0, scaling=0.0)
    for seed in range(4):
        rng, replay = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        image, labels = sampler._turned(sampler.pairs[0], [16, 16, 16], rng)
        angles = np.deg2rad((torch.rand(3, generator=replay).double().numpy() * 2 - 1) * 30.0)
        matrix = rotation_matrix(angles)
        # output voxel q reads the volume at centre + M q: the bar (volume axis d) lies along M^-1 e_d in the patch
        expected = np.linalg.inv(matrix) @ np.array([1.0, 0.0, 0.0])
        points = np.argwhere(labels.numpy() == 3).astype(np.float64)
        axis = np.linalg.svd(points - points.mean(axis=0), full_matrices=False)[2][0]
        angle = np.degrees(np.arccos(min(1.0, abs(float(axis @ expected)) / np.linalg.norm(expected))))
        assert angle < 3.0, (seed, angle)
        assert np.abs(points.mean(axis=0) - 15.5).max() < 1.0  # turned about the patch centre
        # the image was turned with the labels: inside the bar it reads the bar's intensity
        assert float(image[0][labels == 3].mean()) == pytest.approx(0.3, abs=0.02)
        assert float(image[0][labels == 1].mean()) == pytest.approx(0.1, abs=0.02)


def test_a_patch_reaching_outside_reads_the_volume_and_pads_background():
    volume = _bar_volume()
    sampler = PairSampler([_pair(volume)], (32, 32, 32), rotation_deg=0.0, scaling=0.2)
    rng = torch.Generator().manual_seed(3)
    image, labels = sampler._turned(sampler.pairs[0], [-8, 40, 16], rng)  # straddles two faces of the volume
    assert labels.shape == (32, 32, 32) and image.shape == (1, 32, 32, 32)
    assert set(np.unique(labels.numpy()).tolist()) <= {0, 1, 3}
    assert float(image[0][labels == 0].max()) < 0.1  # zeros outside, as _crop_or_pad pads


def test_without_rotation_or_scaling_a_patch_is_the_plain_crop_at_its_start():
    volume = _bar_volume()
    sampler = PairSampler([_pair(volume)], (32, 32, 32), augment=False)
    labels = sampler.sample(torch.Generator().manual_seed(9))[1]
    replay = torch.Generator().manual_seed(9)
    torch.randint(1, (1,), generator=replay)  # sample()'s pick of the pair
    start = sampler._start(0, replay)
    assert np.array_equal(labels.numpy(), volume[tuple(slice(s, s + 32) for s in start)])


def test_the_cli_trains_with_turned_real_patches_and_records_it(tmp_path, scene, capsys):
    label_map, (image, labels) = scene
    code = main(["train", "--label-maps", label_map, "--validation-maps", "none.nii.gz", "--run-dir",
                 str(tmp_path / "run"), "--labelled-scan", f"{image},{labels}", "--labelled-fraction", "0.9",
                 "--labelled-rotation", "12", "--labelled-scaling", "0.1", "--steps", "2", "--validate-every", "2",
                 "--patch-size", "32", "--threads", "1"])
    assert code == 0, capsys.readouterr().err
    metadata = read_metadata(tmp_path / "run" / "latest.safetensors")
    assert metadata["labelled_rotation_deg"] == 12.0 and metadata["labelled_scaling"] == 0.1


@pytest.mark.parametrize("rotation, scaling", [(-1.0, 0.0), (50.0, 0.0), (0.0, 0.5)])
def test_bad_turns_are_refused(tmp_path, rotation, scaling):
    with pytest.raises(ValueError, match="rotation must lie in"):
        PairSampler([_pair(_bar_volume())], (32, 32, 32), rotation_deg=rotation, scaling=scaling)
    with pytest.raises(ValueError, match="rotation must lie in"):
        TrainingConfig(label_maps=["map.nii.gz"], run_dir=str(tmp_path), labelled_rotation_deg=rotation,
                       labelled_scaling=scaling)
