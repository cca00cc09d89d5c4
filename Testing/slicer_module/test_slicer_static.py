"""Checks of the module's files that need no Slicer application: the .ui file against the code using it, the
parameter node against the .ui bindings, no torch at import time, CMake lists, extension metadata, icon."""
import ast
import json
import re
import struct
import sys
import types
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from conftest import ROOT
MODULE_DIR = ROOT / "SegLossBrain"
GLUE_DIR = MODULE_DIR / "SegLossBrainSlicer"
MODULE_FILE = MODULE_DIR / "SegLossBrain.py"
UI_FILE = ROOT / "Resources" / "UI" / "SegLossBrain.ui"
CODE_FILES = [MODULE_FILE] + sorted(GLUE_DIR.glob("*.py"))


def ui_widgets():
    """{name: class} of every widget in the .ui file, and {parameter name: (widget name, class)}."""
    widgets, bindings = {}, {}
    for widget in ElementTree.parse(UI_FILE).iter("widget"):
        widgets[widget.get("name")] = widget.get("class")
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bindings[prop.find("string").text] = (widget.get("name"), widget.get("class"))
    return widgets, bindings


def parameter_fields():
    """{field: annotation source} of the parameterNodeWrapper class, read without importing Slicer."""
    tree = ast.parse((GLUE_DIR / "parameters.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(getattr(d, "id", "") == "parameterNodeWrapper" for d in node.decorator_list):
            return {item.target.id: ast.unparse(item.annotation) for item in node.body if isinstance(item, ast.AnnAssign)}
    raise AssertionError("no @parameterNodeWrapper class in parameters.py")


def test_every_widget_the_code_uses_exists_in_the_ui_file():
    widgets, _ = ui_widgets()
    used = set()
    for path in CODE_FILES:
        used |= set(re.findall(r"\bui\.([A-Za-z_]\w*)", path.read_text()))
    assert used, "the code uses no widgets?"
    assert sorted(used - set(widgets)) == []


def test_required_widgets_exist_with_their_classes():
    widgets, _ = ui_widgets()
    expected = {
        "inputVolumeSelector": "qMRMLNodeComboBox", "outputSegmentationSelector": "qMRMLNodeComboBox",
        "modelSelector": "QComboBox", "deviceComboBox": "QComboBox", "ttaCheckBox": "QCheckBox",
        "confidenceCheckBox": "QCheckBox", "applyButton": "QPushButton", "progressBar": "QProgressBar",
        "statusLabel": "QLabel", "logText": "QPlainTextEdit", "show3DButton": "QPushButton",
        "volumesTableView": "qMRMLTableView", "lowConfidenceList": "QListWidget",
    }
    assert {name: widgets.get(name) for name in expected} == expected


def test_ui_bindings_match_parameter_node_fields_and_widget_kinds():
    _, bindings = ui_widgets()
    fields = parameter_fields()
    assert set(bindings) <= set(fields)
    for parameter, (widget, widget_class) in bindings.items():
        annotation = fields[parameter]
        if widget_class == "QCheckBox":
            assert annotation == "bool", parameter
        elif widget_class == "QDoubleSpinBox":
            assert annotation == "float", parameter
        elif widget_class == "QComboBox":
            assert "Choice(" in annotation, f"{parameter}: a QComboBox binding needs a Choice annotation"
        elif widget_class == "qMRMLNodeComboBox":
            assert annotation.startswith("vtkMRML"), parameter
    node_types = {w.get("name"): [s.text for s in w.iter("string")] for w in ElementTree.parse(UI_FILE).iter("widget")}
    assert "vtkMRMLScalarVolumeNode" in node_types["inputVolumeSelector"]
    assert "vtkMRMLSegmentationNode" in node_types["outputSegmentationSelector"]


def test_scene_goes_to_node_selectors_but_not_to_table_views():
    """qMRMLTableView: 'If scene is set then MRMLTableViewNode has to be set, too' -- with a scene and no view node
    it shows nothing after every batch operation (scene or DICOM load). The panels set its table node directly."""
    widgets, _ = ui_widgets()
    scene_slots = ("mrmlSceneChanged(vtkMRMLScene*)", "setMRMLScene(vtkMRMLScene*)")
    receivers = {c.findtext("receiver") for c in ElementTree.parse(UI_FILE).iter("connection")
                 if (c.findtext("signal"), c.findtext("slot")) == scene_slots}
    assert receivers == {name for name, cls in widgets.items() if cls == "qMRMLNodeComboBox"}
    assert {"volumesTableView", "fineTuneDiceTableView"} <= {n for n, c in widgets.items() if c == "qMRMLTableView"}


def module_level_imports(path):
    """Names imported when the file is imported: top-level statements, including inside top-level try/if."""
    names = []
    pending = list(ast.parse(path.read_text()).body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module or "")
        elif isinstance(node, (ast.Try, ast.If)):
            pending += node.body + node.orelse + [h for handler in getattr(node, "handlers", []) for h in handler.body]
    return names


@pytest.mark.parametrize("path", CODE_FILES, ids=lambda p: p.name)
def test_no_torch_or_engine_import_at_module_import(path):
    heavy = [name for name in module_level_imports(path) if name.split(".")[0] in ("torch", "SegLossBrainLib", "monai")]
    assert heavy == []


def import_module_file(monkeypatch):
    """SegLossBrain.py imported freshly, with a stand-in for Slicer's ScriptedLoadableModule."""
    stub = types.ModuleType("slicer.ScriptedLoadableModule")
    for name in ("ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleTest"):
        setattr(stub, name, type(name, (), {"__init__": lambda self, *args: None}))

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    stub.ScriptedLoadableModule = ScriptedLoadableModule
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", stub)
    monkeypatch.setitem(sys.modules, "torch", None)  # any `import torch` now raises ImportError
    monkeypatch.syspath_prepend(str(MODULE_DIR))
    for name in ("SegLossBrain", "SegLossBrainSlicer.i18n"):  # imported afresh; the originals come back after
        monkeypatch.setitem(sys.modules, name, None)
        del sys.modules[name]
    import SegLossBrain

    return SegLossBrain


def test_module_file_imports_without_torch_and_describes_itself(monkeypatch):
    slicer = pytest.importorskip("slicer")
    SegLossBrain = import_module_file(monkeypatch)
    parent = types.SimpleNamespace()
    SegLossBrain.SegLossBrain(parent)
    assert parent.categories == ["Segmentation"]
    text = parent.helpText + parent.acknowledgementText
    for citation in ("Wong", "MICCAI 2018", "Exponential Logarithmic Loss", "Sudre", "DLMIA 2017",
                     "Generalised Dice overlap"):
        assert citation in text
    for name in ("SegLossBrainWidget", "SegLossBrainLogic", "SegLossBrainTest"):
        assert hasattr(SegLossBrain, name)
    assert issubclass(SegLossBrain.SegLossBrainWidget, slicer.util.VTKObservationMixin)
    assert "torch" not in sys.modules or sys.modules["torch"] is None


def test_in_slicer_the_category_is_slicers_and_the_icon_is_found_from_a_checkout(monkeypatch):
    """Slicer translates its category names in the qSlicerAbstractCoreModule context: a category translated in the
    module's own context would become a second, untranslated 'Segmentation' folder. Slicer looks for the icon in
    Resources/ beside SegLossBrain.py, which a source checkout (Additional module paths) does not have."""
    pytest.importorskip("slicer")
    calls, icons = [], []
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: calls.append(("tr", text)) or text
    i18n.translate = lambda context, text: calls.append((context, text)) or f"[{text}]"
    qt = types.ModuleType("qt")
    qt.QIcon = lambda path: icons.append(path) or path
    monkeypatch.setitem(sys.modules, "slicer.i18n", i18n)
    monkeypatch.setitem(sys.modules, "qt", qt)
    SegLossBrain = import_module_file(monkeypatch)
    parent = types.SimpleNamespace()
    SegLossBrain.SegLossBrain(parent)
    assert parent.categories == ["[Segmentation]"] and ("qSlicerAbstractCoreModule", "Segmentation") in calls
    assert ("tr", "Segmentation") not in calls and ("tr", "SegLossBrain") in calls
    assert parent.icon == icons[0] and Path(icons[0]) == ROOT / "Resources" / "Icons" / "SegLossBrain.png"


def test_file_sizes_keep_one_job_per_file():
    assert len(MODULE_FILE.read_text().splitlines()) <= 160
    for path in GLUE_DIR.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path.name


def test_module_cmake_lists_every_script_and_resource():
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    assert "slicerMacroBuildScriptedModule" in cmake
    assert "${MODULE_NAME}.py" in cmake and "set(MODULE_NAME SegLossBrain)" in cmake
    for path in CODE_FILES[1:]:
        assert str(path.relative_to(MODULE_DIR)).replace("\\", "/") in cmake, path.name
    for resource in re.findall(r"^\s+((?:Icons|UI)/\S+|SegLossBrainLabels\.csv)\s*$", cmake, re.M):
        assert (ROOT / "Resources" / resource).is_file(), resource
    assert "Icons/SegLossBrain.png" in cmake and "UI/SegLossBrain.ui" in cmake


def test_extension_metadata():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    for variable in ("EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL",
                     "EXTENSION_SCREENSHOTURLS"):
        assert re.search(rf"set\({variable} \"[^\"]+\"\)", cmake), variable
    assert 'set(EXTENSION_CATEGORY "Segmentation")' in cmake
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in cmake
    assert "add_subdirectory(SegLossBrain)" in cmake
    entry = json.loads((ROOT / "SegLossBrain.json").read_text())
    allowed = {"$schema", "build_dependencies", "build_subdirectory", "category", "scm_revision", "scm_type",
               "scm_url", "tier"}
    assert set(entry) <= allowed and {"$schema", "category", "scm_url"} <= set(entry)
    assert entry["build_dependencies"] == ["PyTorch"] and entry["category"] == "Segmentation"
    license_text = (ROOT / "LICENSE.txt").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text


def test_icon_is_a_128_pixel_png():
    data = (ROOT / "Resources" / "Icons" / "SegLossBrain.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (128, 128)
