"""The cortex boundary refinement: a phantom whose "network" draws the cortex 1.5 mm too far out, on a 1 mm image
that shows where it really ends. Expectations come from the phantom's own geometry and, for the interpolated
probabilities, from SimpleITK's linear resampling."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import rotation
from SegLossBrainLib.postprocessing.pial_boundary import _probabilities_at, refine_pial_boundary
from SegLossBrainLib.preprocessing import grid as grids

WM, CORTEX, CSF = 1, 2, 16
TRUE_PIAL_MM, NETWORK_PIAL_MM = 18.0, 19.5  # the network's cortex reaches 1.5 mm too far


def sphere_labels(reference: sitk.Image, pial_mm: float) -> np.ndarray:
    """White matter inside 12 mm, cortex to ``pial_mm``, CSF to 24 mm, background outside, on ``reference``."""
    size = reference.GetSize()
    k, j, i = np.meshgrid(*[np.arange(n) for n in reversed(size)], indexing="ij")
    matrix = np.asarray(reference.GetDirection()).reshape(3, 3) @ np.diag(reference.GetSpacing())
    physical = np.stack([i, j, k], -1) @ matrix.T + np.asarray(reference.GetOrigin())
    radius = np.linalg.norm(physical - np.array([2.0, -3.0, 1.0]), axis=-1)
    labels = np.zeros(radius.shape, np.uint8)
    labels[radius < 24] = CSF
    labels[radius < pial_mm] = CORTEX
    labels[radius < 12] = WM
    return labels, radius


def case(spacing=(1.0, 1.0, 1.0), direction=None, invert=False, seed=0):
    """(image, labels before refinement, probabilities, network grid, true labels, radius)."""
    image = sitk.Image([64, 64, int(round(64 / spacing[2]))], sitk.sitkFloat32)
    image.SetSpacing(spacing)
    image.SetDirection([float(v) for v in np.asarray(direction if direction is not None else np.eye(3)).ravel()])
    centre = np.asarray(image.GetDirection()).reshape(3, 3) @ (np.diag(spacing) @ (np.array(image.GetSize()) - 1) / 2)
    image.SetOrigin([float(v) for v in -centre])
    truth, radius = sphere_labels(image, TRUE_PIAL_MM)
    values = np.array([0, 110, 70] + [0] * 13 + [20] + [0] * 3, np.float32)
    if invert:
        values = np.where(values > 0, 130 - values, 0).astype(np.float32)
    array = values[truth] + np.random.default_rng(seed).normal(0, 2, truth.shape)
    intensities = sitk.GetImageFromArray(array.astype(np.float32))
    intensities.CopyInformation(image)
    grid = grids.plan_network_grid(image)
    network_labels, _ = sphere_labels(grid.reference_image(), NETWORK_PIAL_MM)
    probabilities = np.full((20,) + network_labels.shape, 0.01 / 19, np.float32)
    np.put_along_axis(probabilities, network_labels[None].astype(np.int64), 0.99, axis=0)
    labels, _ = grids.probabilities_to_image(probabilities, grid, image, False)
    return intensities, labels, probabilities, grid, truth, radius


def cortex_dice(labels: np.ndarray, truth: np.ndarray) -> float:
    a, b = labels == CORTEX, truth == CORTEX
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("invert", [False, True], ids=["T1-like", "inverted contrast"])
def test_the_cortex_ends_where_the_image_says(invert):
    intensities, labels, probabilities, grid, truth, radius = case(invert=invert)
    before = sitk.GetArrayFromImage(labels)
    after = sitk.GetArrayFromImage(refine_pial_boundary(labels, intensities, probabilities, grid)[0])
    # the network's extra shell (18-19.5 mm) was cortex and is given back to CSF; the true cortex stays
    shell = (radius > TRUE_PIAL_MM + 0.5) & (radius < NETWORK_PIAL_MM - 0.5)
    assert (before[shell] == CORTEX).mean() > 0.9
    assert (after[shell] == CSF).mean() > 0.95
    assert (after[(before == CORTEX) & (radius < TRUE_PIAL_MM - 1)] == CORTEX).all()
    assert cortex_dice(after, truth) > cortex_dice(before, truth) + 0.05
    assert cortex_dice(after, truth) > 0.97


def test_only_the_cortex_outside_boundary_moves():
    intensities, labels, probabilities, grid, truth, radius = case()
    before = sitk.GetArrayFromImage(labels)
    after = sitk.GetArrayFromImage(refine_pial_boundary(labels, intensities, probabilities, grid)[0])
    changed = before != after
    assert changed.any()
    assert set(np.unique(before[changed])) <= {CORTEX, CSF, 0}
    assert set(np.unique(after[changed])) <= {CORTEX, CSF, 0}
    assert (after[before == WM] == WM).all()  # the white matter boundary is the network's
    # nothing moves farther than one network voxel from the network's cortex/outside boundary
    assert radius[changed].min() > NETWORK_PIAL_MM - 2 * grid.spacing
    assert radius[changed].max() < NETWORK_PIAL_MM + 2 * grid.spacing


def test_oblique_anisotropic_input_keeps_its_grid_and_is_refined():
    intensities, labels, probabilities, grid, truth, radius = case(spacing=(1.0, 0.9, 1.3),
                                                                    direction=rotation(10, -20, 30))
    refined, _ = refine_pial_boundary(labels, intensities, probabilities, grid)
    for get in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(refined, get)() == getattr(labels, get)()
    before, after = sitk.GetArrayFromImage(labels), sitk.GetArrayFromImage(refined)
    assert cortex_dice(after, truth) > cortex_dice(before, truth) + 0.03


def test_interpolated_probabilities_are_simpleitks_linear_resampling():
    intensities, labels, probabilities, grid, truth, radius = case(spacing=(1.0, 0.9, 1.3),
                                                                    direction=rotation(10, -20, 30))
    voxels = np.nonzero((radius > 15) & (radius < 22))
    ours = _probabilities_at(probabilities, grid, labels, voxels, (CORTEX, CSF))
    for index in (CORTEX, CSF):
        channel = sitk.GetImageFromArray(probabilities[index])
        channel.CopyInformation(grid.reference_image())
        expected = sitk.GetArrayFromImage(sitk.Resample(channel, labels, sitk.Transform(), sitk.sitkLinear, 0.0,
                                                        sitk.sitkFloat32))[voxels]
        np.testing.assert_allclose(ours[index], expected, atol=1e-5)


def test_a_class_too_small_to_measure_leaves_the_labels_alone():
    intensities, labels, probabilities, grid, truth, radius = case()
    array = sitk.GetArrayFromImage(labels)
    tiny = array.copy()
    tiny[(array == CSF) & (radius > 19.6)] = 0  # CSF only in the network's thin layer: too few voxels outside it
    tiny[(array == 0)] = 0
    small = sitk.GetImageFromArray(tiny)
    small.CopyInformation(labels)
    values = sitk.GetArrayFromImage(intensities)
    values[tiny == 0] = np.nan  # no background measurable either
    unmeasurable = sitk.GetImageFromArray(values)
    unmeasurable.CopyInformation(intensities)
    refined = sitk.GetArrayFromImage(refine_pial_boundary(small, unmeasurable, probabilities, grid)[0])
    np.testing.assert_array_equal(refined, tiny)


def test_segment_refines_by_default_and_the_option_turns_it_off(labels_network, random_model_file):
    from conftest import brain_image, phantom_brain
    from SegLossBrainLib.cli import build_parser
    from SegLossBrainLib.inference.segment import segment

    labels, _ = phantom_brain()
    labels_network(labels)
    image = brain_image(labels)
    off = segment(image, model=str(random_model_file), device="cpu", pial_refinement=False, return_probabilities=True)
    network_only, _ = grids.probabilities_to_image(off.probabilities.numpy(), off.network_grid, image, False)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(off.labels), sitk.GetArrayFromImage(network_only))
    on = segment(image, model=str(random_model_file), device="cpu")
    expected, _ = refine_pial_boundary(network_only, image, off.probabilities.numpy(), off.network_grid)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(on.labels), sitk.GetArrayFromImage(expected))
    for command in ("segment", "batch", "evaluate"):
        parser = build_parser()
        required = {"segment": ["in.nii", "out.nii"], "batch": ["in", "--output-dir", "out"],
                    "evaluate": ["--images", "in.nii", "--labels", "ref.nii"]}[command]
        assert parser.parse_args([command, *required]).pial_refinement is True
        assert parser.parse_args([command, *required, "--no-pial-refinement"]).pial_refinement is False


def test_a_moved_voxel_gets_its_new_labels_probability_as_confidence():
    intensities, labels, probabilities, grid, truth, radius = case()
    _, confidence = grids.probabilities_to_image(probabilities, grid, intensities, True)
    refined, refined_confidence = refine_pial_boundary(labels, intensities, probabilities, grid, confidence)
    before, after = sitk.GetArrayFromImage(labels), sitk.GetArrayFromImage(refined)
    moved = before != after
    assert moved.any()
    # independent: each class's probability resampled linearly by SimpleITK, read at the voxel's new label
    expected = sitk.GetArrayFromImage(confidence).copy()
    for index in np.unique(after[moved]):
        channel = sitk.GetImageFromArray(probabilities[index])
        channel.CopyInformation(grid.reference_image())
        resampled = sitk.GetArrayFromImage(sitk.Resample(channel, labels, sitk.Transform(), sitk.sitkLinear, 0.0,
                                                         sitk.sitkFloat32))
        where = moved & (after == index)
        expected[where] = resampled[where]
    np.testing.assert_allclose(sitk.GetArrayFromImage(refined_confidence), expected, atol=1e-5)
    assert (sitk.GetArrayFromImage(refined_confidence)[moved] < 0.5).all()  # the network did not favour them
