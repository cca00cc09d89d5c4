"""Island removal: hand-built probability volumes with known components, component sizes checked against
scipy.ndimage (an independent labeller), and the CLI switch end to end."""
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from conftest import phantom, rotation
from SegLossBrainLib.cli import main
from SegLossBrainLib.postprocessing.islands import island_mask, suppress_islands

C = 20


def volume(assignments, second=None, shape=(30, 30, 30)):
    """Softmax-like probabilities: 0.7 on each voxel's class, 0.2 on ``second`` (or background), rest spread."""
    labels = np.zeros(shape, dtype=np.int64)
    for index, region in assignments:
        labels[region] = index
    probabilities = np.full((C,) + shape, 0.1 / (C - 2), dtype=np.float32)
    for index in range(C):
        probabilities[index][labels == index] = 0.7
    runner_up = np.zeros(shape, dtype=np.int64) if second is None else second
    for index in range(C):
        probabilities[index][(runner_up == index) & (labels != index)] = 0.2
    return torch.from_numpy(probabilities), labels


def test_small_detached_piece_goes_to_its_next_class_and_both_hemispheres_stay():
    left, right = np.s_[5:15, 2:12, 5:15], np.s_[5:15, 18:28, 5:15]  # a paired structure, 1000 voxels each
    island = np.s_[25:27, 25:27, 25:27]  # 8 voxels of the same class far away
    second = np.zeros((30, 30, 30), dtype=np.int64)
    second[island] = 5
    probabilities, labels = volume([(4, left), (4, right), (4, island)], second)
    cleaned = suppress_islands(probabilities, min_fraction=0.1).argmax(dim=0).numpy()
    expected = labels.copy()
    expected[island] = 5  # its next most probable class
    assert np.array_equal(cleaned, expected)
    assert np.array_equal(suppress_islands(probabilities, 0.0).argmax(dim=0).numpy(), labels)  # 0: unchanged


def test_csf_and_lone_structures_are_left_alone():
    probabilities, labels = volume([(16, np.s_[2:12, 2:12, 2:12]), (16, np.s_[25:27, 25:27, 25:27]),
                                    (13, np.s_[15:20, 15:20, 15:20])])
    assert np.array_equal(suppress_islands(probabilities, 0.5).argmax(dim=0).numpy(), labels)
    with pytest.raises(ValueError):
        suppress_islands(probabilities, 1.5)


@pytest.mark.parametrize("fraction", [0.05, 0.3])
def test_island_mask_matches_scipy_components(fraction):
    rng = np.random.default_rng(4)
    mask = ndimage.binary_opening(rng.random((40, 40, 40)) > 0.55, iterations=1)
    components, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))  # 26-connectivity
    sizes = np.bincount(components.ravel())[1:]
    assert count > 3
    small = [i + 1 for i, size in enumerate(sizes) if size < fraction * sizes.max()]
    assert np.array_equal(island_mask(mask, fraction), np.isin(components, small))


def test_cli_removes_islands_only_when_asked(tmp_path, random_model_file):
    image, _ = phantom(size=(60, 56, 40), spacing=(1.6, 1.7, 2.5), direction=rotation(0, 8, -12))
    input_file = tmp_path / "t1.nrrd"
    sitk.WriteImage(image, str(input_file))
    outputs = {}
    for name, extra in (("removed", ["--remove-islands", "0.1"]), ("kept", [])):
        out = tmp_path / f"{name}.nii.gz"
        assert main(["segment", str(input_file), str(out), "--model", str(random_model_file), "--device", "cpu",
                     "--force", "--probabilities", str(tmp_path / f"{name}_p.nii.gz")] + extra) == 0
        outputs[name] = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f"{name}_p.nii.gz")))
    kept = np.moveaxis(outputs["kept"], -1, 0)  # written as a 20-component vector image on the network grid
    removed = np.moveaxis(outputs["removed"], -1, 0)
    assert not np.array_equal(removed.argmax(axis=0), kept.argmax(axis=0))  # the random model leaves islands
    assert np.array_equal(removed.argmax(axis=0), suppress_islands(torch.from_numpy(kept), 0.1).argmax(dim=0).numpy())
