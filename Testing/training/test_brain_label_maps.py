"""Brain-only label maps drawn FreeSurfer's way (fs_label_maps/) mixed into the full-head training maps: the share
each group gets, the weighting the loss keeps, FreeSurfer's extra value 80, and what the model file records."""
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SegLossBrainLib.cli import main
from SegLossBrainLib.labels import load_label_table
from SegLossBrainLib.losses import label_weights_from_frequencies
from SegLossBrainLib.models.files import read_metadata
from SegLossBrainLib.synthesis.generator import SynthesisSettings, SyntheticBrainGenerator
from SegLossBrainLib.training.mixed_sampler import SyntheticMixture
from SegLossBrainLib.training.trainer import Trainer, TrainingConfig, target_frequencies

from test_mixed_sampler import Tagged, assert_picks_follow_the_draws


def test_each_synthetic_batch_comes_from_the_group_the_draw_picks():
    mixture = SyntheticMixture(Tagged(0, sources=["full-head maps"]), Tagged(1), brain_share=0.25)
    assert_picks_follow_the_draws(mixture, 0.25, seed=11)
    assert mixture.sources == ["full-head maps"]


@pytest.mark.parametrize("share", [0.0, 1.0, 1.2])
def test_shares_outside_the_open_interval_are_refused(share):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        SyntheticMixture(Tagged(0), Tagged(1), share)


def _sphere_map(path, values_by_radius, outer=0):
    """A 48^3 1 mm map of nested shells: ``values_by_radius`` = [(radius, aseg value), ...], inner first."""
    k, j, i = np.meshgrid(*[np.arange(48)] * 3, indexing="ij")
    r = np.sqrt((k - 24) ** 2 + (j - 24) ** 2 + (i - 24) ** 2)
    radii, values = zip(*values_by_radius)
    array = np.select([r < rad for rad in radii], list(values), outer).astype(np.int16)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return str(path), array


@pytest.fixture
def maps(tmp_path):
    """A full-head map (CSF and a scalp-like 516 shell around the brain) and a brain-only map as FreeSurfer draws
    it: nothing outside the brain, a few voxels of CSF (24) and non-WM hypointensities (80) in the pallidum."""
    head, _ = _sphere_map(tmp_path / "head.nii.gz", [(4, 4), (9, 10), (14, 2), (18, 3), (20, 24), (23, 516)])
    brain, array = _sphere_map(tmp_path / "brain_aseg.nii.gz", [(2, 80), (4, 4), (9, 13), (14, 2), (18, 3)])
    return head, brain, array


def test_a_brain_only_map_with_value_80_is_drawn_and_80_is_background_in_the_target(maps):
    _, brain, array = maps
    settings = SynthesisSettings(patch_size=(32, 32, 32)).without_augmentation()
    generator = SyntheticBrainGenerator([brain], settings)
    source = generator.sources[0]
    assert 80 in source.values.tolist()  # its own intensity class, not refused
    table = load_label_table()
    code_80 = source.values.tolist().index(80)
    assert int(source.target_lut[code_80]) == 0  # not one of the 19 structures
    image, target = generator.sample(torch.Generator().manual_seed(0))
    assert image.shape == (1, 32, 32, 32) and torch.isfinite(image).all()
    present = set(np.unique(target.numpy()).tolist())
    # the shells drawn at 1.5 mm around the centre: pallidum, lateral ventricle, WM, cortex, background
    expected = {0} | {table.index_of(name) for name in ("pallidum", "lateral ventricle", "cerebral white matter",
                                                         "cerebral cortex")}
    assert present == expected


def test_a_run_with_brain_only_maps_keeps_the_full_head_weights_and_records_the_mix(tmp_path, maps):
    head, brain, _ = maps
    config = TrainingConfig(label_maps=[head], brain_label_maps=[brain], brain_maps_share=0.4,
                            validation_maps=[head, brain], run_dir=str(tmp_path / "run"), patch_size=(32, 32, 32),
                            validation_size=(32, 32, 32), steps=2, validate_every=2, checkpoint_every=2)
    torch.set_num_threads(1)
    trainer = Trainer(config)
    assert isinstance(trainer.generator, SyntheticMixture)
    full_head_only = SyntheticBrainGenerator([head], SynthesisSettings(patch_size=(32, 32, 32))).sources
    expected = label_weights_from_frequencies(target_frequencies(full_head_only, 20)).tolist()
    assert trainer.loss_params["label_weights"] == pytest.approx(expected)
    assert trainer.run()["status"] == "finished"
    metadata = read_metadata(tmp_path / "run" / "latest.safetensors")
    assert metadata["training_data"] == ["head.nii.gz"]
    assert metadata["brain_label_maps"] == ["brain_aseg.nii.gz"] and metadata["brain_maps_share"] == 0.4
    assert set(metadata["validation"]["synthetic"]) == {"head.nii.gz", "brain_aseg.nii.gz"}


def test_the_cli_holds_out_the_named_brain_maps_for_validation(tmp_path, maps, capsys):
    head, brain, _ = maps
    other = tmp_path / "brain_two_aseg.nii.gz"
    other.write_bytes(Path(brain).read_bytes())
    folder = tmp_path / "brain_maps"
    folder.mkdir()
    for path in (brain, other):
        (folder / Path(path).name).write_bytes(Path(path).read_bytes())
    code = main(["train", "--label-maps", head, "--validation-maps", "none", "--brain-label-maps", str(folder),
                 "--brain-validation-maps", "brain_two_aseg.nii.gz", "--brain-maps-share", "0.3",
                 "--patch-size", "32", "--steps", "1", "--validate-every", "1", "--threads", "1",
                 "--run-dir", str(tmp_path / "run")])
    assert code == 0
    metadata = read_metadata(tmp_path / "run" / "latest.safetensors")
    assert metadata["brain_label_maps"] == ["brain_aseg.nii.gz"] and metadata["brain_maps_share"] == 0.3
    assert list(metadata["validation"]["synthetic"]) == ["brain_two_aseg.nii.gz"]


def test_the_cli_refuses_when_every_brain_map_is_held_out(tmp_path, maps, capsys):
    head, brain, _ = maps
    code = main(["train", "--label-maps", head, "--brain-label-maps", brain,
                 "--brain-validation-maps", "brain_aseg.nii.gz", "--steps", "1", "--run-dir", str(tmp_path / "r")])
    assert code == 2
    assert "no brain-only label maps left for training" in capsys.readouterr().err
