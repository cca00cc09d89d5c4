"""Composite heads: a brain-only map placed inside a full-head map (skull-on images drawn FreeSurfer's way).

The expectation is geometric: the brain-only map is the full-head map's brain made again on another grid (oblique,
anisotropic, shifted, stretched), so after alignment its structures must land where the full-head map has them,
the skull and scalp must stay as they were, and the intracranial voxels it leaves empty must become CSF."""
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SegLossBrainLib.cli import main
from SegLossBrainLib.models.files import read_metadata
from SegLossBrainLib.synthesis.composite_heads import (brain_mask, composite_head, composite_pairs, label_array)
from SegLossBrainLib.training.mixed_sampler import StrippedOrSkullOn, SyntheticMixture
from SegLossBrainLib.training.trainer import Trainer, TrainingConfig

from test_mixed_sampler import Tagged, assert_picks_follow_the_draws

CENTRE = np.array([3.0, -5.0, 8.0])  # LPS mm: the head's brain centre
SEMI_AXES = np.array([30.0, 36.0, 27.0])  # mm


def _shells(points_mm, scale=1.0, shift=(0.0, 0.0, 0.0)):
    """Aseg values of an ellipsoidal brain (WM core, cortex, a pallidum blob off centre) inside CSF, skull (a
    500-series value) and scalp, as a function of LPS points; ``scale`` stretches the whole head about its centre,
    ``shift`` (mm) moves it."""
    centre = CENTRE + np.asarray(shift)
    rel = (points_mm - centre) / (SEMI_AXES * scale)
    r = np.sqrt((rel ** 2).sum(axis=-1))
    blob = np.sqrt((((points_mm - centre - np.array([10.0, 0, 0]) * scale) / (6.0 * scale)) ** 2).sum(axis=-1))
    values = np.select([blob < 1, r < 0.75, r < 1.0, r < 1.12, r < 1.22, r < 1.32], [13, 2, 3, 24, 515, 516], 0)
    return values.astype(np.int16)


def _label_image(size, spacing, direction, origin, scale=1.0, shift=(0.0, 0.0, 0.0), brain_only=False) -> sitk.Image:
    image = sitk.Image([int(n) for n in size], sitk.sitkInt16)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    image.SetOrigin(origin)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), axis=-1).reshape(-1, 3).astype(float)
    matrix = np.array(direction).reshape(3, 3) @ np.diag(spacing)
    points = ijk @ matrix.T + np.array(origin)
    values = _shells(points, scale, shift).reshape(size)  # [i, j, k]
    if brain_only:
        values = np.where(np.isin(values, (2, 3, 13)), values, 0)
    array = np.ascontiguousarray(values.transpose(2, 1, 0))  # sitk arrays are [k, j, i]
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(image)
    return result


@pytest.fixture(scope="module")
def head_and_brain():
    head = _label_image((64, 70, 60), (1.5, 1.5, 1.5), np.eye(3).ravel().tolist(), (-45.0, -57.0, -37.0))
    # the same brain, 10 % larger and 12 mm away, on an oblique, anisotropic grid
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    size, spacing = np.array([80, 90, 45]), np.array([1.2, 1.2, 2.0])
    shift = np.array([9.0, -7.0, 4.0])
    origin = CENTRE + shift + np.array([6.0, -4.0, 3.0]) - rotation @ (size * spacing / 2)  # covers the brain
    brain = _label_image(size, spacing.tolist(), rotation.ravel().tolist(), origin.tolist(), scale=1.1, shift=shift,
                         brain_only=True)
    return head, brain


def test_the_placed_brain_lands_on_the_head_brain_and_the_skull_stays(head_and_brain):
    head, brain = head_and_brain
    result = composite_head(brain, head)
    for attribute in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(result, attribute)() == getattr(head, attribute)()  # the head map's grid exactly
    before, after = label_array(head), label_array(result)
    head_brain, placed_brain = brain_mask(before), brain_mask(after)
    assert 2 * (head_brain & placed_brain).sum() / (head_brain.sum() + placed_brain.sum()) > 0.93
    # the pallidum blob: same place within a voxel
    centre_before = np.argwhere(before == 13).mean(axis=0)
    centre_after = np.argwhere(after == 13).mean(axis=0)
    assert np.abs(centre_before - centre_after).max() * 1.5 < 1.5
    # skull, scalp and air untouched wherever the placed brain is not
    outside = ~np.isin(before, (2, 3, 13, 24)) & ~placed_brain
    assert np.array_equal(after[outside], before[outside])
    # intracranial voxels the placed brain leaves empty are CSF, nothing else
    intracranial = np.isin(before, (2, 3, 13, 24))
    assert set(np.unique(after[intracranial & ~placed_brain]).tolist()) == {24}


def test_the_same_maps_give_the_same_composite_every_time(head_and_brain):
    """A resumed run rebuilds its composites: they must be the ones it started with."""
    head, brain = head_and_brain
    first, second = composite_head(brain, head), composite_head(brain, head)
    assert np.array_equal(label_array(first), label_array(second))


def test_maps_stored_as_float_are_read_as_labels(head_and_brain):
    head, brain = head_and_brain
    result = composite_head(sitk.Cast(brain, sitk.sitkFloat32), sitk.Cast(head, sitk.sitkFloat32))
    assert set(np.unique(label_array(result)).tolist()) <= {0, 2, 3, 13, 24, 515, 516}


def test_pairs_take_the_head_maps_in_turn():
    assert composite_pairs(["a", "b"], ["h1", "h2", "h3"], 2) == [("a", "h1"), ("a", "h2"), ("b", "h3"), ("b", "h1")]
    with pytest.raises(ValueError, match="only 3 full-head maps"):
        composite_pairs(["a"], ["h1", "h2", "h3"], 4)


def test_brain_only_draws_go_to_the_composites_with_the_share_asked():
    mixture = StrippedOrSkullOn(Tagged(0, sources=["brain-only maps"]), Tagged(1), composite_share=0.3)
    assert_picks_follow_the_draws(mixture, 0.3, seed=5)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        StrippedOrSkullOn(Tagged(0), Tagged(1), 1.0)


@pytest.mark.parametrize("changes, message", [
    ({"composite_heads": 1, "brain_label_maps": []}, "give --brain-label-maps too"),
    ({"composite_heads": -1}, "must be >= 0"),
    ({"composite_heads": 1, "composite_share": 0.0}, "strictly between 0 and 1"),
])
def test_bad_composite_settings_are_refused(tmp_path, changes, message):
    settings = {"label_maps": ["head.nii.gz"], "brain_label_maps": ["brain.nii.gz"], "run_dir": str(tmp_path)}
    with pytest.raises(ValueError, match=message):
        TrainingConfig(**{**settings, **changes})


def test_a_run_with_composite_heads_draws_them_and_records_the_mix(tmp_path, head_and_brain, capsys):
    head, brain = head_and_brain
    head_path, brain_path = tmp_path / "head.nii.gz", tmp_path / "brain_aseg.nii.gz"
    sitk.WriteImage(head, str(head_path))
    sitk.WriteImage(brain, str(brain_path))
    torch.set_num_threads(1)
    config = TrainingConfig(label_maps=[str(head_path)], brain_label_maps=[str(brain_path)], composite_heads=1,
                            composite_share=0.4, run_dir=str(tmp_path / "trainer"), patch_size=(32, 32, 32),
                            validation_size=(32, 32, 32), steps=1, validate_every=1, checkpoint_every=1)
    mixture = Trainer(config).generator
    assert isinstance(mixture, SyntheticMixture) and isinstance(mixture.brain_only, StrippedOrSkullOn)
    composite = mixture.brain_only.composites.sources[0]
    assert composite.name == "brain_aseg.nii.gz in head.nii.gz"
    assert {13, 24, 515, 516} <= set(composite.values.tolist())  # FreeSurfer's brain inside the head's skull

    code = main(["train", "--label-maps", str(head_path), "--validation-maps", "none", "--brain-label-maps",
                 str(brain_path), "--brain-validation-maps", "none", "--composite-heads", "1",
                 "--composite-share", "0.4", "--patch-size", "32", "--steps", "1", "--validate-every", "1",
                 "--threads", "1", "--run-dir", str(tmp_path / "cli")])
    assert code == 0
    metadata = read_metadata(tmp_path / "cli" / "latest.safetensors")
    assert metadata["composite_heads"] == 1 and metadata["composite_share"] == 0.4
