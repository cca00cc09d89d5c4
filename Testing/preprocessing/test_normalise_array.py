"""normalise_array (numpy, for torch-free inference) equals normalise_intensity (torch, for training) bit for bit."""
import numpy as np
import pytest
import torch

from SegLossBrainLib.preprocessing import intensity
from SegLossBrainLib.preprocessing.intensity import normalise_array, normalise_intensity


def _both(array):
    expected = normalise_intensity(torch.from_numpy(array)).numpy()
    result = normalise_array(array)
    assert result.dtype == np.float32 and result.shape == array.shape
    return result, expected


def test_random_float32():
    array = (np.random.default_rng(0).standard_normal((40, 50, 60)) * 300 + 100).astype(np.float32)
    result, expected = _both(array)
    assert np.array_equal(result, expected)
    assert result.min() == 0 and result.max() == 1


def test_int16_with_a_constant_background():
    rng = np.random.default_rng(1)
    array = np.full((48, 56, 40), -1024, dtype=np.int16)
    array[8:40, 10:46, 6:34] = rng.integers(0, 3000, size=(32, 36, 28), dtype=np.int16)
    result, expected = _both(array)
    assert np.array_equal(result, expected)
    assert np.all(result[array == -1024] == 0)


def test_a_constant_array_maps_to_zeros():
    array = np.full((20, 30, 10), 7.5, dtype=np.float32)
    result, expected = _both(array)
    assert np.array_equal(result, expected) and not result.any()


def test_a_large_array_uses_the_strided_sample():
    shape = (256, 256, 160)  # 10.5 M voxels: the percentiles come from every second voxel
    assert intensity._sample_step(int(np.prod(shape))) == 2
    rng = np.random.default_rng(2)
    array = rng.gamma(2.0, 50.0, size=shape).astype(np.float32)
    array[:, :, :20] = 0  # background
    result, expected = _both(array)
    assert np.array_equal(result, expected)


@pytest.mark.parametrize("count", [1, 2, 199, 200, 201, 1 << 22])
def test_rank_is_a_valid_nearest_rank(count):
    for percent in (intensity.LOW_PERCENTILE, intensity.HIGH_PERCENTILE):
        assert 1 <= intensity._rank(count, percent) <= count
