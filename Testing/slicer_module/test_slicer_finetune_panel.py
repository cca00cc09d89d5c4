"""The Fine-tune section's behaviour (finetune_panel.py) with stand-ins for Qt widgets, on a real MRML scene and
the stand-in engine: pairs table, Start -> live plot and Dice table -> new version listed, Stop, bad input, and the
version actions telling the Segment section which model is active."""
import contextlib
import sys
import time
import types

import pytest

slicer = pytest.importorskip("slicer")
pytest.importorskip("SimpleITK")

from conftest import ROOT  # noqa: E402

from SegLossBrainSlicer import plots  # noqa: E402
from test_slicer_finetune_job import engine, store  # noqa: E402,F401  (fixtures)
from test_slicer_panel import FakeTimer, Signal  # noqa: E402


class Widget:
    """Just enough of the Qt widgets finetune_panel.py touches."""

    def __init__(self, value=0):
        self.text, self.toolTip, self.enabled, self.visible, self.value = "", "", True, True, value
        self.checked, self.collapsed, self.currentIndex, self.table = False, True, -1, None
        self.items, self.lines = [], []
        self.clicked, self.currentIndexChanged, self.currentRowChanged = Signal(), Signal(), Signal()
        self.currentRow = -1  # QListWidget: a property

    count = property(lambda self: len(self.items))

    def setVisible(self, visible):
        self.visible = visible

    def setRange(self, low, high):
        pass

    def addItem(self, text, data=None):
        self.items.append((text, data))
        self.currentIndex = max(self.currentIndex, 0)

    def setItemData(self, index, value, role):
        pass

    def clear(self):
        self.items, self.lines = [], []
        self.currentRow = -1

    def appendPlainText(self, line):
        self.lines.append(line)

    def setMRMLTableNode(self, node):
        self.table = node


class Table(Widget):
    """QTableWidget: rowCount is a property, currentRow() a method."""

    def __init__(self):
        super().__init__()
        del self.currentRow  # a method here, not a property
        self.cells, self.selected = [], -1

    rowCount = property(lambda self: len(self.cells))

    def setHorizontalHeaderLabels(self, labels):
        self.headers = labels

    def insertRow(self, row):
        self.cells.insert(row, [None, None])

    def setCellWidget(self, row, col, widget):
        self.cells[row][col] = widget

    def cellWidget(self, row, col):
        return self.cells[row][col]

    def removeRow(self, row):
        del self.cells[row]

    def currentRow(self):
        return self.selected


class NodeSelector:
    def __init__(self):
        self.node = None

    def setMRMLScene(self, scene):
        self.scene = scene

    def setCurrentNode(self, node):
        self.node = node

    def currentNode(self):
        return self.node


NAMES = ("fineTuneAddPairButton fineTuneRemovePairButton fineTuneLossComboBox fineTuneExpLogWidget "
         "fineTuneStartButton fineTuneShowPlotButton fineTuneProgressBar fineTuneStatusLabel fineTuneDiceTableView "
         "fineTuneLogText fineTuneLogCollapsibleButton fineTuneVersionsList fineTuneActivateButton "
         "fineTuneRevertButton fineTuneDeleteButton fineTuneNameLineEdit fineTuneFreezeEncoderCheckBox "
         "fineTuneContinueButton").split()


@pytest.fixture
def panel(engine, store, monkeypatch):  # noqa: F811
    qt = types.ModuleType("qt")
    qt.QTimer, qt.Qt = FakeTimer, types.SimpleNamespace(ToolTipRole=3)
    monkeypatch.setitem(sys.modules, "qt", qt)
    monkeypatch.delitem(sys.modules, "SegLossBrainSlicer.finetune_panel", raising=False)
    errors = []
    monkeypatch.setattr(slicer, "mrmlScene", engine.scene, raising=False)
    monkeypatch.setattr(slicer, "qMRMLNodeComboBox", NodeSelector, raising=False)
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **kw: errors.append(text))
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda *a, **kw: True)
    monkeypatch.setattr(slicer.util, "WaitCursor", contextlib.nullcontext)
    from SegLossBrainSlicer import dependencies

    monkeypatch.setattr(dependencies, "missing_requirements", lambda: [])
    from SegLossBrainSlicer.finetune_panel import FinetunePanel

    ui = types.SimpleNamespace(**{name: Widget() for name in NAMES}, fineTunePairsTable=Table(),
                               fineTuneGammaSpinBox=Widget(0.3), fineTuneWDiceSpinBox=Widget(0.8),
                               fineTuneWCrossSpinBox=Widget(0.2), fineTuneStepsSpinBox=Widget(4),
                               fineTuneLearningRateSpinBox=Widget(1e-4))
    (volume_a, segmentation_a), (volume_b, segmentation_b) = engine.pairs
    segment_panel = types.SimpleNamespace(
        parameters=types.SimpleNamespace(inputVolume=volume_a, outputSegmentation=segmentation_a, device="cpu"),
        current_model=lambda: None, models=[])
    segment_panel.use_model = segment_panel.models.append
    finetune = FinetunePanel(ui, segment_panel)
    ui.fineTuneAddPairButton.clicked.emit()
    ui.fineTunePairsTable.cellWidget(1, 0).setCurrentNode(volume_b)
    ui.fineTunePairsTable.cellWidget(1, 1).setCurrentNode(segmentation_b)
    yield types.SimpleNamespace(panel=finetune, ui=ui, errors=errors, segment=segment_panel, engine=engine)
    finetune.cleanup()


def poll_until_idle(env, timeout=30):
    deadline = time.monotonic() + timeout
    while env.panel.job is not None or env.panel._versions_call is not None:
        assert time.monotonic() < deadline, "panel did not become idle"
        env.panel._poll()
        time.sleep(0.02)


def test_pairs_table_starts_with_the_segmented_case_and_loss_settings_follow_the_loss(panel):
    ui, pairs = panel.ui, panel.panel.pairs()
    assert pairs == panel.engine.pairs and ui.fineTunePairsTable.headers == ["Volume", "Segmentation"]
    assert [data for _text, data in ui.fineTuneLossComboBox.items] == ["explog", "gdl", "wce"]
    assert ui.fineTuneExpLogWidget.visible and "Add a validation case" in ui.fineTuneLossComboBox.toolTip
    ui.fineTuneLossComboBox.currentIndex = 1
    ui.fineTuneLossComboBox.currentIndexChanged.emit(1)
    assert not ui.fineTuneExpLogWidget.visible and "Generalised Dice" in ui.fineTuneLossComboBox.toolTip
    assert panel.panel.options().loss_params == {}
    ui.fineTuneRemovePairButton.clicked.emit()
    assert len(panel.panel.pairs()) == 1


def test_start_shows_live_plot_and_dice_then_lists_the_new_version(panel):
    ui = panel.ui
    ui.fineTuneNameLineEdit.text = "site-9"
    ui.fineTuneStartButton.clicked.emit()
    assert panel.errors == [] and ui.fineTuneStartButton.text == "Stop" and ui.fineTuneProgressBar.visible
    assert not ui.fineTuneAddPairButton.enabled
    poll_until_idle(panel)
    assert panel.errors == [] and ui.fineTuneStartButton.text == "Start fine-tuning"
    assert ui.fineTuneStatusLabel.text.startswith("Finished: kept the weights of step 4 as 'site-9'.")
    rows = plots.read_dice_table(ui.fineTuneDiceTableView.table)
    assert rows["mean"] == pytest.approx((0.5, 0.54, 0.04)) and rows["thalamus"] == pytest.approx((0.4, 0.44, 0.04))
    plot = panel.panel.plot
    assert plot.loss_table.GetNumberOfRows() == 4 and plot.dice_table.GetNumberOfRows() == 3
    assert ui.fineTuneShowPlotButton.enabled and len(ui.fineTuneVersionsList.items) == 2
    assert None in panel.segment.models  # the Segment model list was refreshed
    panel.panel.on_scene_closing()  # the chart and Dice table go with the scene; the view must not keep them
    assert ui.fineTuneDiceTableView.table is None and not ui.fineTuneShowPlotButton.enabled
    assert panel.panel.plot is None and panel.panel.dice_node is None


def test_stop_keeps_the_last_validated_version(panel):
    panel.engine.mode("slow")
    panel.ui.fineTuneStepsSpinBox.value = 1000
    panel.ui.fineTuneStartButton.clicked.emit()
    deadline = time.monotonic() + 20
    while panel.panel.job.latest is None:
        assert time.monotonic() < deadline
        panel.panel._poll()
        time.sleep(0.02)
    panel.ui.fineTuneStartButton.clicked.emit()
    assert panel.ui.fineTuneStartButton.text == "Stop now (keep nothing)"
    poll_until_idle(panel)
    assert panel.ui.fineTuneStatusLabel.text.startswith("Stopped at step") and panel.errors == []
    # the engine kept the run: Continue appears, and asks the engine to continue that run by name
    assert panel.ui.fineTuneContinueButton.visible and panel.panel.resumable
    name = panel.panel.resumable
    panel.engine.mode("ok")
    panel.ui.fineTuneContinueButton.clicked.emit()
    assert panel.panel.job.options.continue_run and panel.panel.job.options.name == name
    poll_until_idle(panel)
    assert panel.ui.fineTuneStatusLabel.text.startswith("Finished") and panel.errors == []
    assert not panel.ui.fineTuneContinueButton.visible  # a finished run leaves nothing to continue


def test_bad_pairs_are_shown_and_nothing_starts(panel):
    panel.ui.fineTunePairsTable.cellWidget(1, 1).setCurrentNode(None)
    panel.ui.fineTuneStartButton.clicked.emit()
    assert panel.panel.job is None and "Pair 2: Select a segmentation" in panel.errors[0]


def test_version_actions_make_segment_follow_the_active_version(panel):
    ui = panel.ui
    panel.panel.refresh_versions()
    poll_until_idle(panel)
    assert [text for text, _data in ui.fineTuneVersionsList.items][0].endswith("[active]")
    ui.fineTuneVersionsList.currentRow = 1
    ui.fineTuneVersionsList.currentRowChanged.emit(1)
    assert ui.fineTuneActivateButton.enabled and ui.fineTuneDeleteButton.enabled
    ui.fineTuneActivateButton.clicked.emit()
    assert not ui.fineTuneActivateButton.enabled  # while the command runs
    poll_until_idle(panel)
    assert panel.segment.models[-1] == "user:site-1"
    ui.fineTuneVersionsList.currentRow = 1
    ui.fineTuneVersionsList.currentRowChanged.emit(1)
    assert not ui.fineTuneDeleteButton.enabled and not ui.fineTuneActivateButton.enabled  # the active one
    ui.fineTuneRevertButton.clicked.emit()
    poll_until_idle(panel)
    assert panel.segment.models[-1] == "shipped:wong2018-explog"
    ui.fineTuneVersionsList.currentRow = 1
    ui.fineTuneDeleteButton.clicked.emit()
    poll_until_idle(panel)
    assert len(ui.fineTuneVersionsList.items) == 1 and panel.errors == []
