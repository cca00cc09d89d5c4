"""Dice, HD95 and volumes against MONAI and hand counts; the label table against FreeSurfer conventions."""
import numpy as np
import pytest
import torch

from SegLossBrainLib.evaluation.metrics import dice_per_label, evaluate_labels, hausdorff95
from SegLossBrainLib.labels import LabelError, load_label_table

monai_metrics = pytest.importorskip("monai.metrics")


def test_dice_by_hand():
    prediction = np.array([0, 1, 1, 2, 2, 2])
    reference = np.array([0, 1, 2, 2, 2, 0])
    dice = dice_per_label(prediction, reference, 4)
    assert dice[1] == pytest.approx(2 * 1 / (2 + 1))
    assert dice[2] == pytest.approx(2 * 2 / (3 + 3))
    assert np.isnan(dice[3])  # absent from both


def test_dice_and_hd95_match_monai():
    rng = np.random.default_rng(0)
    reference = np.zeros((40, 40, 40), np.int64)
    reference[10:30, 12:28, 8:25] = 1
    reference[15:20, 15:20, 15:20] = 2
    prediction = np.roll(reference, 2, axis=0)
    prediction[rng.random(prediction.shape) > 0.995] = 1
    dice = dice_per_label(prediction, reference, 3)
    onehot = lambda a: torch.nn.functional.one_hot(torch.from_numpy(a), 3).permute(3, 0, 1, 2)[None].float()
    monai_dice = monai_metrics.DiceMetric(include_background=True, reduction="none")(onehot(prediction), onehot(reference))
    assert np.allclose(dice, monai_dice.numpy()[0], atol=1e-6)
    spacing = (2.0, 1.0, 1.5)
    ours = hausdorff95(prediction == 1, reference == 1, spacing)
    theirs = monai_metrics.compute_hausdorff_distance(onehot(prediction)[:, 1:2], onehot(reference)[:, 1:2],
                                                      percentile=95, spacing=spacing)
    assert ours == pytest.approx(float(theirs), rel=0.05, abs=0.5)


def test_evaluate_rows_volumes():
    reference = np.zeros((10, 10, 10), np.uint8)
    reference[:5] = 7
    prediction = np.zeros_like(reference)
    prediction[:6] = 7
    rows = {r["structure"]: r for r in evaluate_labels(prediction, reference, (2.0, 1.0, 1.0),
                                                       load_label_table().names, with_hausdorff=False)}
    assert rows["thalamus"]["volume_reference_ml"] == pytest.approx(500 * 2 / 1000)
    assert rows["thalamus"]["volume_diff_percent"] == pytest.approx(20.0)


def test_table_order_names_and_aseg_merge():
    table = load_label_table()
    assert table.num_classes == 20
    assert table.names[1] == "cerebral white matter" and table.names[19] == "optic chiasm"
    aseg = np.array([2, 41, 3, 42, 31, 63, 251, 77, 85, 24, 1000, 0, 28, 60])
    assert table.map_freesurfer(aseg).tolist() == [1, 1, 2, 2, 3, 3, 1, 1, 19, 16, 0, 0, 18, 18]
    assert len(table.scored_indices) == 17 and 16 not in table.scored_indices and 19 not in table.scored_indices
    assert table.index_of("Ventral_DC") == 18
    assert table.structures[9].terminology["Type"].value == "89278009"  # SNOMED CT putamen


def test_label_convention_detection():
    table = load_label_table()
    labels, convention = table.to_index_labels(np.array([0, 1, 19]))
    assert convention == "index"
    labels, convention = table.to_index_labels(np.array([0, 41, 85]))
    assert convention == "freesurfer" and labels.tolist() == [0, 1, 19]
    with pytest.raises(LabelError, match="999"):
        table.to_index_labels(np.array([0, 41, 999]))


def test_table_loads_in_slicer_as_a_colour_table_with_terminology():
    slicer = pytest.importorskip("slicer")
    table = load_label_table()
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode")
    storage = scene.AddNewNodeByClass("vtkMRMLColorTableStorageNode")
    storage.SetFileName(str(table.path))
    assert storage.ReadData(node) == 1
    assert node.GetNumberOfColors() == 20
    for structure in table.structures:
        assert node.GetColorName(structure.index) == structure.name
        rgba = [0.0] * 4
        node.GetColor(structure.index, rgba)
        assert np.allclose(np.array(rgba[:3]) * 255, structure.color, atol=0.5)
    assert "SCT^89278009^Putamen" in node.GetTerminologyAsString(9)


def test_real_aseg_extras_map_to_background_and_mixtures_are_refused():
    table = load_label_table()
    # Vessel (30/62), 5th ventricle (72) and non-WM hypointensities (80) are aseg values outside the table.
    labels, convention = table.to_index_labels(np.array([0, 2, 30, 62, 72, 80, 41, 17]))
    assert convention == "freesurfer" and labels.tolist() == [0, 1, 0, 0, 0, 0, 1, 14]
    with pytest.raises(LabelError, match="mixes conventions: values 1, 19"):
        table.to_index_labels(np.array([0, 1, 19, 41]))
    with pytest.raises(LabelError, match="1000"):
        table.to_index_labels(np.array([0, 41, 1000]))
