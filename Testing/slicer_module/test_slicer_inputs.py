"""Bad input and the Qt-free plumbing around it: input volume checks, model file checks, model list,
missing packages, the CLI protocol, and re-indexing an output read back on a flipped grid."""
import hashlib
import sys
import types
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from conftest import ROOT  # noqa: E402

from SegLossBrainSlicer import cli_protocol, dependencies, model_choices  # noqa: E402
from SegLossBrainSlicer.input_checks import (InputProblem, check_input_volume, check_model_file,  # noqa: E402
                                             check_still_in_scene)
from SegLossBrainSlicer.volume_files import align_to_grid, image_from_array  # noqa: E402


def add_volume(scene, class_name="vtkMRMLScalarVolumeNode", shape=(10, 10, 10), components=1, name="vol"):
    volume = scene.AddNewNodeByClass(class_name, name)
    array = np.zeros(shape + ((components,) if components > 1 else ()), np.float32)
    image = image_from_array(array.reshape(shape[0], shape[1], -1)) if components == 1 else None
    if components > 1:
        image = vtk.vtkImageData()
        image.SetDimensions(shape[2], shape[1], shape[0])
        image.AllocateScalars(vtk.VTK_FLOAT, components)
    volume.SetAndObserveImageData(image)
    return volume


@pytest.fixture
def scene():
    return slicer.vtkMRMLScene()


def test_a_plain_scalar_volume_passes(scene):
    assert check_input_volume(add_volume(scene)) == []


@pytest.mark.parametrize("make, message", [
    (lambda s: None, "Select an input volume"),
    (lambda s: add_volume(s, "vtkMRMLLabelMapVolumeNode"), "is a label map"),
    (lambda s: add_volume(s, "vtkMRMLVectorVolumeNode", components=3), "vector or tensor"),
    (lambda s: add_volume(s, components=4), "4 values per voxel"),  # 4D / multi-echo stored as components
    (lambda s: add_volume(s, shape=(1, 64, 64)), "too thin"),
    (lambda s: s.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty"), "holds no voxels"),
])
def test_unusable_inputs_are_refused_with_a_sentence(scene, make, message):
    with pytest.raises(InputProblem, match=message):
        check_input_volume(make(scene))


def test_volume_under_a_transform_is_noted_not_refused(scene):
    volume = add_volume(scene)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "to atlas")
    volume.SetAndObserveTransformNodeID(transform.GetID())
    notes = check_input_volume(volume)
    assert len(notes) == 1 and "'to atlas'" in notes[0] and "nothing is hardened" in notes[0]


def test_frame_of_a_sequence_is_noted(scene):
    volume = add_volume(scene)
    for node_class in (slicer.vtkMRMLSequenceNode, slicer.vtkMRMLSequenceBrowserNode):
        scene.RegisterNodeClass(node_class())  # the Sequences module does this in Slicer
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode")
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode")
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    browser.AddProxyNode(volume, sequence, False)
    assert any("one frame of a sequence" in note for note in check_input_volume(volume))


def test_input_removed_or_scene_closed_is_detected(scene):
    volume = add_volume(scene)
    check_still_in_scene(scene, volume, "input volume")
    scene.Clear(0)
    with pytest.raises(InputProblem, match="scene closed"):
        check_still_in_scene(scene, volume, "input volume")


def test_missing_and_tampered_model_files_are_refused(tmp_path):
    with pytest.raises(InputProblem, match="No model is selected"):
        check_model_file(None)
    with pytest.raises(InputProblem, match="is missing"):
        check_model_file(tmp_path / "gone.safetensors")
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"weights")
    good = hashlib.sha256(b"weights").hexdigest()
    check_model_file(model, good.upper())
    model.write_bytes(b"weights, edited")
    with pytest.raises(InputProblem, match="modified or damaged"):
        check_model_file(model, good)


def fake_models_module(monkeypatch, entries=None, error=None, active=None):
    """``active``: what ``default_model_path`` returns (a path), raises (an exception), or None: not defined."""
    module = types.ModuleType("SegLossBrainLib.models.store")

    class NoModelError(RuntimeError):
        pass

    def list_models():
        if error:
            raise NoModelError(error)
        return entries

    def default_model_path():
        if isinstance(active, Exception):
            raise active
        return Path(active)

    module.NoModelError, module.list_models = NoModelError, list_models
    if active is not None:
        module.default_model_path = default_model_path
    monkeypatch.setitem(sys.modules, "SegLossBrainLib.models.store", module)


def test_model_list_says_clearly_when_there_is_none(monkeypatch):
    fake_models_module(monkeypatch, error="No trained model found: run 'seglossbrain train' first.")
    choices, message = model_choices.available_models()
    assert choices == [] and "No trained model found" in message
    fake_models_module(monkeypatch, entries=[])
    assert "No trained model is installed" in model_choices.available_models()[1]


def test_model_list_offers_shipped_and_user_versions(monkeypatch):
    entry = types.SimpleNamespace
    fake_models_module(monkeypatch, entries=[
        entry(name="wong2018-explog", path="/m/a.safetensors", source="shipped", metadata={"sha256": "ab"}),
        entry(name="wong2018-explog", path="/u/v2.safetensors", source="user", metadata={"version": "v2"}),
    ])
    choices, message = model_choices.available_models()
    assert message is None
    assert [c.label for c in choices] == ["wong2018-explog (shipped)", "wong2018-explog (your model, v2)"]
    assert choices[0].sha256 == "ab" and choices[1].key == "user:wong2018-explog"
    assert model_choices.find_choice(choices, "user:wong2018-explog") is choices[1]
    assert model_choices.find_choice(choices, "user:deleted") is choices[0]


def two_versions(tmp_path):
    entry = types.SimpleNamespace
    shipped, user = tmp_path / "shipped.safetensors", tmp_path / "store" / "v2.safetensors"
    return [entry(name="wong2018-explog", path=shipped, source="shipped", metadata={}),
            entry(name="site-a-v2", path=user, source="user", metadata={"version": "v2"})]


def test_without_a_stored_choice_the_active_version_is_selected(monkeypatch, tmp_path):
    entries = two_versions(tmp_path)
    # the active pointer names the user version (given with a path that resolves to the same file)
    fake_models_module(monkeypatch, entries=entries, active=tmp_path / "store" / ".." / "store" / "v2.safetensors")
    choices, _message = model_choices.available_models()
    assert model_choices.find_choice(choices, None) is choices[1]
    assert model_choices.find_choice(choices, "user:deleted") is choices[1]
    assert model_choices.find_choice(choices, "shipped:wong2018-explog") is choices[0]  # a stored choice wins
    assert model_choices.active_choice(choices) is choices[1]
    assert model_choices.find_choice([], None) is None


def test_an_unresolvable_active_version_falls_back_to_the_first(monkeypatch, tmp_path):
    entries = two_versions(tmp_path)
    fake_models_module(monkeypatch, entries=entries, active=ValueError("active.json is unreadable"))
    choices, _message = model_choices.available_models()
    assert model_choices.find_choice(choices, "user:deleted") is choices[0]
    fake_models_module(monkeypatch, entries=entries, active=tmp_path / "elsewhere.safetensors")  # not listed
    assert model_choices.find_choice(choices, None) is choices[0]


def test_missing_packages_are_listed_torch_first():
    missing = dependencies.missing_requirements({"numpy": "numpy>=1.0", "nope": "seglossbrain-no-such-pkg>=1",
                                                 "torch": "torch>=999"})
    assert missing == ["torch>=999", "seglossbrain-no-such-pkg>=1"]
    text = dependencies.confirmation_text(missing)
    assert "torch>=999" in text and "seglossbrain-no-such-pkg>=1" in text and "PyTorch is large" in text


def test_required_packages_match_the_engine_pyproject():
    import tomllib

    with open(ROOT / "pyproject.toml", "rb") as stream:
        declared = tomllib.load(stream)["project"]["dependencies"]
    assert sorted(declared, key=str.lower) == sorted(dependencies.REQUIREMENTS.values(), key=str.lower)


def test_cli_arguments_and_event_parsing():
    options = cli_protocol.SegmentOptions("/m.safetensors", "cuda", tta=True, confidence=True)
    assert cli_protocol.segment_arguments("in.nrrd", "out.nrrd", options, "conf.nrrd") == [
        "segment", "in.nrrd", "out.nrrd", "--progress-json", "--device", "cuda", "--model", "/m.safetensors",
        "--tta", "--confidence", "conf.nrrd"]
    unrefined = cli_protocol.SegmentOptions(pial_refinement=False)
    assert cli_protocol.segment_arguments("in.nrrd", "out.nrrd", unrefined)[-1] == "--no-pial-refinement"
    arguments = cli_protocol.segment_arguments("in.nrrd", "out.nrrd", unrefined)
    from SegLossBrainLib.cli import build_parser  # the engine's own parser accepts what the module sends
    assert build_parser().parse_args(arguments[:3] + arguments[4:]).pial_refinement is False
    with pytest.raises(ValueError):
        cli_protocol.segment_arguments("a", "b", cli_protocol.SegmentOptions(device="tpu"))
    progress = cli_protocol.parse_line('{"event": "progress", "fraction": 1.7, "message": "x"}\n')
    assert (progress.kind, progress.fraction, progress.message) == ("progress", 1.0, "x")
    result = cli_protocol.parse_line('{"event": "result", "output": "o.nrrd", "volumes_ml": {"thalamus": 1}}')
    assert result.kind == "result" and result.data["volumes_ml"]["thalamus"] == 1
    for line in ("plain text", "{not json", '{"event": "other"}', "[1, 2]"):
        assert cli_protocol.parse_line(line).kind == "text"
    assert cli_protocol.is_out_of_memory("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate")
    assert not cli_protocol.is_out_of_memory("model file is damaged")


def test_child_environment_finds_the_engine_and_resources():
    env = cli_protocol.engine_environment({"PYTHONPATH": "/elsewhere"})
    assert env["PYTHONPATH"].split(":")[0] == str(ROOT / "SegLossBrain") and env["PYTHONPATH"].endswith("/elsewhere")
    assert Path(env["SEGLOSSBRAIN_RESOURCES"]) == ROOT / "Resources"
    assert env["PYTHONUNBUFFERED"] == "1"


def test_output_read_back_on_a_flipped_or_swapped_grid_is_reindexed():
    rng = np.random.default_rng(3)
    dims = (5, 6, 7)  # i, j, k
    reference = np.diag([0.9, 1.1, 2.0, 1.0])
    reference[:3, 3] = [10, -20, 30]
    truth = rng.integers(0, 20, size=dims[::-1]).astype(np.uint8)
    for permutation, signs in (((0, 1, 2), (1, -1, 1)), ((2, 0, 1), (-1, 1, -1)), ((1, 2, 0), (1, 1, 1))):
        # Describe the same voxels with file axis b = reference axis permutation[b], maybe reversed.
        file_ijk = truth.transpose(2, 1, 0).transpose(permutation)
        to_reference = np.zeros((4, 4))
        to_reference[3, 3] = 1
        for b, a in enumerate(permutation):
            to_reference[a, b] = signs[b]
            if signs[b] < 0:
                file_ijk = np.flip(file_ijk, b)
                to_reference[a, 3] = dims[a] - 1
        file_matrix = reference @ to_reference
        aligned = align_to_grid(np.ascontiguousarray(file_ijk.transpose(2, 1, 0)), file_matrix, reference, dims)
        assert np.array_equal(aligned, truth)
    shifted = reference.copy()
    shifted[:3, 3] += [0.45, 0, 0]  # half a voxel off: not the same grid
    assert align_to_grid(truth, shifted, reference, dims) is None
