"""The panel's behaviour (panel.py) with stand-ins for Qt widgets and Slicer's parameterNodeWrapper, on a real
MRML scene and a stand-in engine CLI: Segment -> Cancel -> results, errors, no model, missing packages."""
import contextlib
import sys
import time
import types

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
pytest.importorskip("SimpleITK")

from test_slicer_runner import FAKE_CLI, make_scene_with_volume  # noqa: E402


class Signal:
    def __init__(self):
        self.slots = []

    def connect(self, slot):
        self.slots.append(slot)

    def emit(self, *args):
        for slot in list(self.slots):
            slot(*args)


class FakeWidget:
    """Just enough of QWidget, QComboBox, QListWidget, QPlainTextEdit... for panel.py."""

    def __init__(self):
        self.text, self.toolTip, self.enabled, self.visible, self.value = "", "", True, True, 0
        self.checked, self.collapsed, self.currentIndex, self.items, self.lines = False, True, -1, [], []
        self.clicked, self.toggled, self.currentIndexChanged, self.itemClicked = Signal(), Signal(), Signal(), Signal()
        self.table = None

    count = property(lambda self: len(self.items))

    def setVisible(self, visible):
        self.visible = visible

    def setRange(self, low, high):
        self.range = (low, high)

    def blockSignals(self, block):
        return False

    def clear(self):
        self.items, self.lines, self.currentIndex = [], [], -1

    def addItem(self, item):
        self.items.append(item)
        self.currentIndex = max(self.currentIndex, 0)

    def setItemData(self, index, value, role):
        pass

    def appendPlainText(self, line):
        self.lines.append(line)

    def setMRMLTableNode(self, node):
        self.table = node


class FakeItem:
    def __init__(self, text):
        self.label, self.values = text, {}

    def setData(self, role, value):
        self.values[role] = value

    def data(self, role):
        return self.values[role]


class FakeTimer:
    def __init__(self):
        self.timeout, self.active = Signal(), False

    def setInterval(self, ms):
        pass

    def start(self):
        self.active = True

    def stop(self):
        self.active = False


def fake_parameter_node_wrapper(cls):
    defaults = {name: getattr(cls, name, None) for name in cls.__annotations__}

    class Wrapped:
        def __init__(self, node):
            self.__dict__.update(defaults, parameterNode=node)

        def connectGui(self, ui):
            return "gui-tag"

        def disconnectGui(self, tag):
            pass

    return Wrapped


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A panel on a scene with one brain volume; the engine is the stand-in CLI, the model a small file."""
    qt = types.ModuleType("qt")
    qt.QTimer, qt.QListWidgetItem = FakeTimer, FakeItem
    qt.Qt = types.SimpleNamespace(ToolTipRole=3, UserRole=256)
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper, wrapper.Choice = fake_parameter_node_wrapper, lambda choices: ("Choice", choices)
    monkeypatch.setitem(sys.modules, "qt", qt)
    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", wrapper)
    for name in ("SegLossBrainSlicer.panel", "SegLossBrainSlicer.parameters"):
        monkeypatch.delitem(sys.modules, name, raising=False)

    scene, volume, _ = make_scene_with_volume()
    errors, layers = [], []
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **kw: errors.append((text, kw)))
    monkeypatch.setattr(slicer.util, "WaitCursor", contextlib.nullcontext)
    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", lambda *a, **kw: contextlib.nullcontext())
    monkeypatch.setattr(slicer.util, "setSliceViewerLayers", lambda **kw: layers.append(kw))

    from SegLossBrainSlicer import dependencies, model_choices
    from SegLossBrainSlicer.parameters import SegLossBrainParameterNode
    from SegLossBrainSlicer.segment_run import SegmentRun

    model = tmp_path / "model.safetensors"
    model.write_bytes(b"weights")
    choice = model_choices.ModelChoice("shipped:wong2018", "wong2018 (shipped)", str(model), "shipped", None)
    state = types.SimpleNamespace(models=([choice], None), missing=[], mode="ok")
    monkeypatch.setattr(model_choices, "available_models", lambda: state.models)
    monkeypatch.setattr(dependencies, "missing_requirements", lambda: state.missing)
    script = tmp_path / "fake_cli.py"
    script.write_text(FAKE_CLI)

    class Logic:
        def create_run(self, parameters, options, model_sha256=None):
            monkeypatch.setenv("FAKE_MODE", state.mode)
            return SegmentRun(scene, parameters.inputVolume, options, parameters.outputSegmentation,
                              parameters.volumesTable, parameters.confidenceVolume, model_sha256,
                              command_prefix=[sys.executable, str(script)])

    from SegLossBrainSlicer.panel import SegmentPanel

    ui = types.SimpleNamespace(**{name: FakeWidget() for name in (
        "progressBar", "modelMessageLabel", "applyButton", "modelSelector", "show3DButton", "lowConfidenceList",
        "logText", "statusLabel", "logCollapsibleButton", "volumesTableView")})
    parameters = SegLossBrainParameterNode(scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode"))
    parameters.inputVolume = volume
    panel = SegmentPanel(ui, Logic())
    panel.set_parameter_node(parameters)
    yield types.SimpleNamespace(panel=panel, ui=ui, scene=scene, volume=volume, parameters=parameters,
                                errors=errors, layers=layers, state=state)
    panel.cleanup()


def run_until_idle(env, timeout=30):
    deadline = time.monotonic() + timeout
    while env.panel._run is not None:
        assert time.monotonic() < deadline, "run did not finish"
        env.panel._poll()
        time.sleep(0.02)


def node_count(scene):
    return scene.GetNumberOfNodes()


def test_segment_shows_progress_then_results(env):
    ui = env.ui
    assert ui.applyButton.enabled and ui.applyButton.text == "Segment"
    ui.applyButton.clicked.emit()
    assert ui.applyButton.text == "Cancel" and ui.progressBar.visible and env.panel._timer.active
    run_until_idle(env)
    assert env.errors == []
    assert ui.applyButton.text == "Segment" and not ui.progressBar.visible and not env.panel._timer.active
    assert ui.statusLabel.text.startswith("Done: 19 structures")
    segmentation = env.parameters.outputSegmentation
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 19
    assert ui.volumesTableView.table is env.parameters.volumesTable
    assert len(ui.lowConfidenceList.items) == 5 and ui.show3DButton.enabled
    assert env.layers[-1]["background"] is env.volume


def test_clicking_a_least_confident_structure_centres_the_views(env):
    red = env.scene.AddNewNodeByClass("vtkMRMLSliceNode", "Red")
    red.SetLayoutName("Red")
    env.ui.applyButton.clicked.emit()
    run_until_idle(env)
    item = env.ui.lowConfidenceList.items[0]
    env.ui.lowConfidenceList.itemClicked.emit(item)
    centre = np.array([red.GetSliceToRAS().GetElement(r, 3) for r in range(3)])
    assert np.linalg.norm(centre) > 0  # moved from the origin onto the structure


def test_cancel_leaves_the_scene_unchanged(env):
    env.state.mode = "slow"
    before = node_count(env.scene)
    env.ui.applyButton.clicked.emit()
    env.ui.applyButton.clicked.emit()  # the same button now cancels
    run_until_idle(env, timeout=10)
    assert env.ui.statusLabel.text.startswith("Cancelled")
    assert node_count(env.scene) == before and env.errors == []


def test_input_removed_while_running_cancels(env):
    env.state.mode = "slow"
    env.ui.applyButton.clicked.emit()
    env.scene.RemoveNode(env.volume)
    run_until_idle(env, timeout=10)
    assert "input volume was removed" in env.ui.statusLabel.text
    assert env.scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 0


def test_child_crash_shows_an_error_with_its_log(env):
    env.state.mode = "crash"
    env.ui.applyButton.clicked.emit()
    run_until_idle(env)
    (text, options), = env.errors
    assert "exit code 3" in text and "boom in the network" in options["detailedText"]
    assert env.ui.statusLabel.text == "Segmentation failed." and not env.ui.logCollapsibleButton.collapsed


def test_no_model_disables_segment_and_says_why(env):
    env.state.models = ([], "No trained model found: train one first.")
    env.panel.refresh_models()
    env.panel.update_state()
    assert not env.ui.applyButton.enabled and env.ui.modelMessageLabel.visible
    assert env.ui.modelMessageLabel.text == "No trained model found: train one first."


def test_bad_input_disables_segment_with_the_reason(env):
    env.parameters.inputVolume = None
    env.panel.update_state()
    assert not env.ui.applyButton.enabled and "Select an input volume" in env.ui.applyButton.toolTip


def test_missing_packages_are_offered_on_segment(env, monkeypatch):
    from SegLossBrainSlicer import dependencies

    env.state.missing = ["torch>=2.1"]
    env.panel._missing_packages = ["torch>=2.1"]
    env.panel.update_state()
    assert env.ui.applyButton.enabled and "torch>=2.1" in env.ui.applyButton.toolTip
    asked = []
    monkeypatch.setattr(dependencies, "ensure_dependencies", lambda: asked.append(1) or False)
    env.ui.applyButton.clicked.emit()
    assert asked and env.panel._run is None  # declined: nothing runs


def test_leaving_the_module_while_running_still_delivers_the_results(env):
    parameters = env.parameters
    env.ui.applyButton.clicked.emit()
    env.panel.set_parameter_node(None)  # what exit() does
    run_until_idle(env)
    assert env.errors == []
    assert parameters.outputSegmentation.GetSegmentation().GetNumberOfSegments() == 19


def test_closing_the_scene_clears_the_results(env):
    env.ui.applyButton.clicked.emit()
    run_until_idle(env)
    assert env.ui.volumesTableView.table is not None and env.ui.lowConfidenceList.items
    env.panel.on_scene_closing()  # what the widget does on StartCloseEvent
    assert env.ui.volumesTableView.table is None and env.ui.lowConfidenceList.items == []
    assert not env.ui.show3DButton.enabled
