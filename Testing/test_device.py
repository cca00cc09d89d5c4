"""Device choice and CPU threads."""
import numpy as np
import pytest
import torch

from SegLossBrainLib import device


def test_named_devices_and_auto():
    assert device.select_device("cpu").type == "cpu"
    assert device.select_device("auto").type in ("cuda", "mps", "cpu")
    assert device.training_device("cpu") == "cpu"
    assert device.training_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        device.select_device("tpu")


def test_threads_and_numpy_seed_are_separate_steps():
    before = torch.get_num_threads()
    try:
        device.set_threads(1)
        assert torch.get_num_threads() == 1
        device.set_threads(None)  # keeps the current setting
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    device.seed_numpy(3)
    first = np.random.rand()
    device.seed_numpy(3)
    assert np.random.rand() == first
