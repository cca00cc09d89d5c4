"""Fine-tuning data from the Slicer side, against the real MRML core (slicer-core): scene pairs -> training
files on the volume's exact grid, segment-name mapping, bad pairs refused with clear messages, the live plot and
Dice table nodes, and static checks of the new files (the background job: test_slicer_finetune_job.py)."""
import re
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
sitk = pytest.importorskip("SimpleITK")

from conftest import ROOT  # noqa: E402

from SegLossBrainLib.labels import load_label_table  # noqa: E402
from SegLossBrainSlicer import plots, segmentation_io  # noqa: E402
from SegLossBrainSlicer.finetune_pairs import match_segments, write_pairs  # noqa: E402
from SegLossBrainSlicer.input_checks import InputProblem  # noqa: E402
from SegLossBrainSlicer.volume_files import array_from_image, ijk_to_ras, image_from_array, set_ijk_to_ras  # noqa: E402
from test_slicer_mrml import oblique_matrix  # noqa: E402

TABLE = load_label_table()



# -- scene helpers ------------------------------------------------------------------------------------------
def make_scene():
    scene = slicer.vtkMRMLScene()
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    scene._test_logic = logic
    return scene


def add_volume(scene, shape=(9, 10, 11), matrix=None, name="T1"):
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    values = np.random.default_rng(0).random(shape).astype(np.float32)
    volume.SetAndObserveImageData(image_from_array(values))
    set_ijk_to_ras(volume, np.diag([1.0, 1.0, 1.0, 1.0]) if matrix is None else matrix)
    return volume


def brain_labels(shape=(9, 10, 11), structures=(1, 2, 7, 8)):
    labels = np.zeros(shape, np.uint8)
    for n, index in enumerate(structures):
        labels[1 + n, 2:-2, 2:-2] = index
    return labels


def add_segmentation(scene, volume, labels, name="corrected"):
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentation_io.labels_to_segmentation(labels, volume, node, TABLE)
    return node


def segment(node, index):
    return node.GetSegmentation().GetSegment(segmentation_io.segment_id(TABLE.structures[index]))


def read_node(path, label):
    node = slicer.vtkMRMLLabelMapVolumeNode() if label else slicer.vtkMRMLScalarVolumeNode()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    return node


# -- pairs -> files -----------------------------------------------------------------------------------------
def test_pairs_become_files_on_the_exact_grid_of_an_oblique_anisotropic_volume(tmp_path):
    scene = make_scene()
    matrix = oblique_matrix(spacing=(0.8, 1.1, 2.5))
    volume = add_volume(scene, matrix=matrix)
    labels = brain_labels()
    written, = write_pairs([(volume, add_segmentation(scene, volume, labels))], tmp_path, TABLE)
    image_node, label_node = read_node(written.image, False), read_node(written.labels, True)
    assert np.allclose(ijk_to_ras(label_node), ijk_to_ras(volume), atol=1e-6)
    assert np.allclose(ijk_to_ras(image_node), ijk_to_ras(volume), atol=1e-6)
    assert np.array_equal(array_from_image(label_node.GetImageData()), labels)
    image, label_file = sitk.ReadImage(str(written.image)), sitk.ReadImage(str(written.labels))
    assert image.GetSize() == label_file.GetSize() == (11, 10, 9)
    for a, b in ((image.GetSpacing(), label_file.GetSpacing()), (image.GetOrigin(), label_file.GetOrigin()),
                 (image.GetDirection(), label_file.GetDirection())):
        assert np.allclose(a, b, atol=1e-6)  # what the engine's same_grid checks
    assert np.allclose(label_file.GetSpacing(), (0.8, 1.1, 2.5))
    assert written.structures == [1, 2, 7, 8] and written.volume_name == "T1"


def test_segments_match_by_name_first_then_by_tag(tmp_path):
    scene = make_scene()
    volume = add_volume(scene)
    node = add_segmentation(scene, volume, brain_labels(structures=(1, 2, 7, 9, 13)))
    segment(node, 7).SetName("Thalamus")  # hand-renamed, same structure
    segment(node, 7).RemoveTag(segmentation_io.STRUCTURE_INDEX_TAG)  # as if drawn by hand: name only
    segment(node, 9).SetName("caudate")  # tag says putamen: the user's name wins
    segment(node, 13).SetName("my brainstem edit")  # no name match: the module's tag tells
    matches = {m.segment_name: (m.index, m.by) for m in match_segments(node, TABLE)[0]}
    assert matches["Thalamus"] == (7, "name") and matches["caudate"] == (8, "name")
    assert matches["my brainstem edit"] == (13, "tag") and matches["cerebral cortex"] == (2, "name")
    written, = write_pairs([(volume, node)], tmp_path, TABLE)
    labels = array_from_image(read_node(written.labels, True).GetImageData())
    assert np.array_equal(labels, brain_labels(structures=(1, 2, 7, 8, 13)))


def test_unknown_segment_names_are_listed_by_name(tmp_path):
    scene = make_scene()
    volume = add_volume(scene)
    node = add_segmentation(scene, volume, brain_labels())
    for index, name in ((7, "lesion"), (8, "tumour core")):
        segment(node, index).SetName(name)
        segment(node, index).RemoveTag(segmentation_io.STRUCTURE_INDEX_TAG)
    with pytest.raises(InputProblem) as caught:
        write_pairs([(volume, node)], tmp_path, TABLE)
    assert "'lesion', 'tumour core'" in str(caught.value) and "Rename" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case, message", [
    ("other grid", "another voxel grid"), ("empty", "is empty within"), ("single", "holds a single structure"),
    ("no segments", "has no segments"), ("no segmentation", "Select a segmentation"),
    ("shifted transform", "another voxel grid"), ("label map", "is a label map"),
])
def test_bad_pairs_are_refused_with_a_clear_message(tmp_path, case, message):
    scene = make_scene()
    volume = add_volume(scene)
    labels = brain_labels()
    segmentation = add_segmentation(scene, volume, labels)
    if case == "other grid":  # drawn on a volume with another voxel size
        other = add_volume(scene, matrix=np.diag([2.0, 1.0, 1.0, 1.0]), name="other")
        segmentation = add_segmentation(scene, other, labels)
    elif case == "empty":
        segmentation = add_segmentation(scene, volume, np.zeros_like(labels))
    elif case == "single":
        segmentation = add_segmentation(scene, volume, np.where(labels == 7, 7, 0).astype(np.uint8))
    elif case == "no segments":
        segmentation.GetSegmentation().RemoveAllSegments()
    elif case == "no segmentation":
        segmentation = None
    elif case == "shifted transform":  # moved by half a voxel: its voxels no longer are the volume's
        import vtk

        transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
        matrix = vtk.vtkMatrix4x4()
        matrix.SetElement(0, 3, 0.5)
        transform.SetMatrixTransformToParent(matrix)
        segmentation.SetAndObserveTransformNodeID(transform.GetID())
    elif case == "label map":
        volume = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
        volume.SetAndObserveImageData(image_from_array(labels))
    with pytest.raises(InputProblem, match=message):
        write_pairs([(volume, segmentation)], tmp_path, TABLE)


def test_every_bad_pair_is_reported_at_once_and_volumes_are_used_once(tmp_path):
    scene = make_scene()
    first, second = add_volume(scene, name="a"), add_volume(scene, name="b")
    good = add_segmentation(scene, first, brain_labels())
    empty = add_segmentation(scene, second, np.zeros((9, 10, 11), np.uint8))
    with pytest.raises(InputProblem) as caught:
        write_pairs([(first, good), (second, empty), (second, good)], tmp_path, TABLE)
    assert "'b' is in more than one pair" in str(caught.value)
    with pytest.raises(InputProblem) as caught:
        write_pairs([(first, empty), (second, empty)], tmp_path, TABLE)
    assert str(caught.value).startswith("Pair 1:") and "\nPair 2:" in str(caught.value)
    with pytest.raises(InputProblem, match="Add at least one pair"):
        write_pairs([], tmp_path, TABLE)


def test_volume_and_segmentation_under_one_transform_are_exported_in_the_volume_frame(tmp_path):
    import vtk

    scene = make_scene()
    volume = add_volume(scene, matrix=oblique_matrix())
    labels = brain_labels()
    segmentation = add_segmentation(scene, volume, labels)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(1, 3, 7.3)
    transform.SetMatrixTransformToParent(matrix)
    for node in (volume, segmentation):
        node.SetAndObserveTransformNodeID(transform.GetID())
    written, = write_pairs([(volume, segmentation)], tmp_path, TABLE)
    assert any("under the transform" in note for note in written.notes)
    label_node = read_node(written.labels, True)
    assert np.allclose(ijk_to_ras(label_node), ijk_to_ras(volume), atol=1e-6)
    assert np.array_equal(array_from_image(label_node.GetImageData()), labels)


# -- plot and Dice table ------------------------------------------------------------------------------------
def column(table_node, name):
    array = table_node.GetTable().GetColumnByName(name)
    return [array.GetValue(r) for r in range(array.GetNumberOfTuples())]


def test_training_plot_holds_loss_and_validation_series_updated_live():
    scene = make_scene()
    plot = plots.TrainingPlot(scene, "site-1")
    plot.add_losses([(1, 0.9), (2, 0.7)])
    plot.add_losses([(3, float("inf"))])
    plot.add_validations([{"step": 0, "mean": 0.61}, {"step": 2, "mean": None}])
    assert column(plot.loss_table, plots.STEP) == [1, 2, 3]
    assert column(plot.loss_table, plots.LOSS)[:2] == [0.9, 0.7] and np.isnan(column(plot.loss_table, plots.LOSS)[2])
    assert column(plot.dice_table, plots.STEP) == [0, 2] and column(plot.dice_table, plots.MEAN_DICE)[0] == 0.61
    chart = plot.chart
    assert chart.GetNumberOfPlotSeriesNodes() == 2 and "site-1" in chart.GetTitle()
    series = [chart.GetNthPlotSeriesNode(n) for n in range(2)]
    assert [s.GetTableNodeID() for s in series] == [plot.loss_table.GetID(), plot.dice_table.GetID()]
    assert [s.GetYColumnName() for s in series] == [plots.LOSS, plots.MEAN_DICE]
    assert all(s.GetXColumnName() == plots.STEP for s in series)
    scene.RemoveNode(plot.loss_table)  # deleted by the user: updates are skipped, not an error
    plot.add_losses([(4, 0.5)])
    assert not plot.attached
    plot.remove()
    assert scene.GetNodesByClass("vtkMRMLPlotChartNode").GetNumberOfItems() == 0


def test_dice_table_before_after_and_change():
    scene = make_scene()
    node = plots.dice_table(scene, "site-1")
    before = {"mean": 0.5, "dice": {"thalamus": 0.4, "caudate": None}}
    after = {"mean": 0.62345, "dice": {"thalamus": 0.7, "caudate": 0.8}}
    plots.fill_dice_table(node, before, after, ["thalamus", "caudate", "putamen"])
    rows = plots.read_dice_table(node)
    assert list(rows) == ["mean", "thalamus", "caudate", "putamen"]
    assert rows["mean"] == pytest.approx((0.5, 0.6234, 0.1234), abs=1e-4)
    assert rows["thalamus"] == pytest.approx((0.4, 0.7, 0.3))
    assert np.isnan(rows["caudate"][0]) and rows["caudate"][1] == 0.8 and np.isnan(rows["caudate"][2])
    assert all(np.isnan(v) for v in rows["putamen"])
    assert node.GetLocked()


# -- static checks of the new files -------------------------------------------------------------------------
GLUE = ROOT / "SegLossBrain" / "SegLossBrainSlicer"
NEW_FILES = ["finetune_panel.py", "finetune_job.py", "finetune_pairs.py", "plots.py", "model_versions.py"]


def test_every_widget_the_fine_tune_panel_uses_exists_in_the_ui_file():
    tree = ElementTree.parse(ROOT / "Resources" / "UI" / "SegLossBrain.ui")
    widgets = {w.get("name"): w.get("class") for w in tree.iter("widget")}
    used = set(re.findall(r"\bui\.([A-Za-z_]\w*)", (GLUE / "finetune_panel.py").read_text()))
    assert len(used) > 20 and sorted(used - set(widgets)) == []
    expected = {"fineTunePairsTable": "QTableWidget", "fineTuneLossComboBox": "QComboBox",
                "fineTuneGammaSpinBox": "QDoubleSpinBox", "fineTuneWDiceSpinBox": "QDoubleSpinBox",
                "fineTuneWCrossSpinBox": "QDoubleSpinBox", "fineTuneStepsSpinBox": "QSpinBox",
                "fineTuneLearningRateSpinBox": "QDoubleSpinBox", "fineTuneNameLineEdit": "QLineEdit",
                "fineTuneStartButton": "QPushButton", "fineTuneProgressBar": "QProgressBar",
                "fineTuneContinueButton": "QPushButton",
                "fineTuneDiceTableView": "qMRMLTableView", "fineTuneVersionsList": "QListWidget",
                "fineTuneActivateButton": "QPushButton", "fineTuneRevertButton": "QPushButton",
                "fineTuneDeleteButton": "QPushButton"}
    assert {name: widgets.get(name) for name in expected} == expected
    assert "fineTunePlaceholderLabel" not in widgets


def test_new_files_are_listed_small_and_free_of_torch_at_import():
    cmake = (ROOT / "SegLossBrain" / "CMakeLists.txt").read_text()
    for name in NEW_FILES:
        text = (GLUE / name).read_text()
        assert f"SegLossBrainSlicer/{name}" in cmake, name
        assert len(text.splitlines()) <= 400, name
        top_level = [line for line in text.splitlines() if line.startswith(("import ", "from "))]
        assert not [line for line in top_level if "torch" in line or "SegLossBrainLib" in line], name
    for name in ("finetune_job.py", "finetune_pairs.py", "plots.py", "model_versions.py"):  # Qt-free
        assert not re.search(r"^\s*(import qt|from qt)", (GLUE / name).read_text(), re.M), name
