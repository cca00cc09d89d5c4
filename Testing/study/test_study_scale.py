"""The loss study's scale: a 3 mm sample covers 192 mm and keeps each structure's voxels as the grid's geometry
says; real labels go onto the 3 mm grid by nearest neighbour; every structure survives at 3 mm on the held-out
maps and the real dev scans (these last skip without the data folder)."""
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import SHARED_DATA, needs_shared_data
from SegLossBrainLib import paths
from SegLossBrainLib.labels import load_label_table
from SegLossBrainLib.study.scale import count_structures, missing, smallest, structure_voxels
from SegLossBrainLib.study.settings import StudySettings
from SegLossBrainLib.synthesis.generator import LabelMapSource, SynthesisSettings, SyntheticBrainGenerator
from SegLossBrainLib.synthesis.geometry import output_grid
from SegLossBrainLib.training.validation import real_on_grid

TABLE = load_label_table()
# aseg value, structure index, cube edge in 1 mm voxels: at 3 mm a cube of edge 3n voxels holds n^3 samples
CUBES = ((10, 7, 15), (17, 14, 9), (26, 17, 6), (85, 19, 3))  # thalamus, hippocampus, accumbens, optic chiasm


def toy_map() -> np.ndarray:
    """120^3 at 1 mm: a white-matter ball with cubes of known size inside (a 'brain' to centre on)."""
    k, j, i = np.meshgrid(*[np.arange(120)] * 3, indexing="ij")
    labels = np.where((k - 60) ** 2 + (j - 60) ** 2 + (i - 60) ** 2 < 50 ** 2, 2, 0).astype(np.int16)
    for offset, (value, _, edge) in zip((30, 50, 70, 85), CUBES):
        labels[offset:offset + edge, 40:40 + edge, 60:60 + edge] = value
    return labels


def test_a_3mm_patch_covers_192mm():
    settings = SynthesisSettings(spacing_mm=3.0, patch_size=(64, 64, 64))
    grid = output_grid(settings.patch_size, settings.spacing_mm, "cpu")
    # voxel centres from -94.5 to +94.5 mm: 64 voxels of 3 mm, 192 mm from first to last voxel edge
    assert grid[0, 0, 0].tolist() == [-94.5] * 3 and grid[-1, -1, -1].tolist() == [94.5] * 3


def test_structures_keep_the_voxels_the_3mm_grid_predicts():
    """No augmentation: each cube of edge 3n mm is n^3 voxels at 3 mm, wherever the grid falls."""
    source = LabelMapSource.from_array(toy_map(), np.eye(4), name="toy")
    settings = SynthesisSettings(spacing_mm=3.0, patch_size=(64, 64, 64), low_resolution_fraction=0).without_augmentation()
    generator = SyntheticBrainGenerator([source], settings)
    _, target = generator.sample(torch.Generator().manual_seed(0))
    counts = count_structures(target.numpy(), TABLE)
    for _, index, edge in CUBES:
        assert counts[TABLE.names[index]] == (edge // 3) ** 3
    assert counts["cerebral white matter"] > 0 and counts["brainstem"] == 0
    found = {"toy": counts}
    assert smallest(found, {TABLE.names[i] for _, i, _ in CUBES}) == ("optic chiasm", 1, "toy")
    assert "brainstem" in missing(found) and "thalamus" not in missing(found)


def test_smallest_and_missing_across_cases():
    counts = {"a": {"x": 5, "y": 0, "z": 9}, "b": {"x": 3, "y": 2, "z": 0}}
    assert smallest(counts) == ("y", 0, "a") and smallest(counts, {"x"}) == ("x", 3, "b")
    assert missing(counts) == {"y": ["a"], "z": ["b"]} and missing(counts, {"x"}) == {}


def test_real_labels_on_the_3mm_grid(tmp_path):
    """A 1 mm labelmap resampled by nearest neighbour onto the study grid: a 30 mm cube is 10^3 voxels, and the
    image comes along on the same grid."""
    labels = np.zeros((120, 120, 120), np.int16)
    labels[45:75, 45:75, 45:75] = 17  # hippocampus, 30 mm
    image = sitk.GetImageFromArray((labels > 0).astype(np.float32) * 100 + 20)
    aseg = sitk.GetImageFromArray(labels)
    sitk.WriteImage(image, str(tmp_path / "t1.nii.gz"))
    sitk.WriteImage(aseg, str(tmp_path / "aseg.nii.gz"))
    tensor, reference = real_on_grid(str(tmp_path / "t1.nii.gz"), str(tmp_path / "aseg.nii.gz"), 3.0)
    assert tensor.shape == (1, 1, 64, 64, 64) and reference.shape == (64, 64, 64)  # 120 mm head -> 192 mm minimum
    assert count_structures(reference, TABLE)["hippocampus"] == 1000
    bright = tensor[0, 0].numpy() > 0.5
    assert abs(int(bright.sum()) - 1000) <= 300  # the linear image covers the same cube (edges interpolated)


@needs_shared_data
def test_all_19_structures_survive_at_3mm_on_the_held_out_maps_and_real_scans():
    folder = SHARED_DATA / paths.LABEL_MAPS
    training, held_out = paths.split_held_out(sorted(folder.glob("*.nii*")))
    real = [(str(SHARED_DATA / paths.REAL_DEV / i), str(SHARED_DATA / paths.REAL_DEV / a), n)
            for n, i, a in paths.REAL_DEV_SCANS]
    settings = StudySettings(steps=1, label_maps=training[:1], validation_maps=held_out, real_pairs=real,
                             grid_spacing=3.0, validation_draws=2)
    counts = structure_voxels(settings, TABLE)
    assert len(counts["synthetic"]) == 4 and missing(counts["synthetic"]) == {}
    scored = {TABLE.names[i] for i in TABLE.scored_indices}
    assert missing(counts["real"], scored) == {}
    structure, voxels, _ = smallest(counts["synthetic"])
    assert voxels >= 1 and structure in {"optic chiasm", "accumbens", "inferior lateral ventricle",
                                         "3rd ventricle", "4th ventricle"}
