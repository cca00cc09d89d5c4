"""The OpenVINO graph written from a model file against the PyTorch module it mirrors, the engine choice, and a
whole segmentation on each engine. PyTorch is the independent expectation: the graph is built from the same
safetensors arrays by other code (``cpu_engine/openvino_graph.py``)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import ROOT, rotation
from SegLossBrainLib.cpu_engine.openvino_graph import expected_tensor_names
from SegLossBrainLib.cpu_engine.runner import EngineError, OpenVinoNetwork, choose_engine
from SegLossBrainLib.models.files import ModelError, save_model
from SegLossBrainLib.models.store import DEFAULT_MODEL_NAME
from SegLossBrainLib.networks import build_network
from SegLossBrainLib.resources import shipped_models_dir

pytest.importorskip("openvino")
SHIPPED = shipped_models_dir() / f"{DEFAULT_MODEL_NAME}.safetensors"
DEMO = ROOT / "Resources" / "Samples" / "synthetic_t1_demo.nii.gz"


def oblique_demo() -> sitk.Image:
    """The shipped demo head (a synthetic T1) on an oblique, anisotropic grid: the voxels as they are, the
    geometry tilted by 5-12 degrees and the slices 1.15 mm apart."""
    image = sitk.ReadImage(str(DEMO))
    image.SetDirection([float(v) for v in rotation(5, -8, 12).flatten()])
    image.SetSpacing((1.0, 1.0, 1.15))
    return image


@pytest.fixture(scope="module")
def trained_like_model(tmp_path_factory):
    """A random wong2018 network whose BatchNorms hold non-trivial statistics (a freshly built one has mean 0 and
    variance 1, which would not test the folding), saved as a model file; the module itself as the reference."""
    torch.manual_seed(3)
    network = build_network("wong2018").eval()
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    path = save_model(network, tmp_path_factory.mktemp("models") / "bn.safetensors", {"loss": {"name": "none"}})
    # the file holds float16 weights: the reference is the module the file rebuilds
    from SegLossBrainLib.models.files import load_model

    return path, load_model(path)[0]


def _input(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 1, *shape), dtype=np.float32)


@pytest.mark.parametrize("shape", [(32, 32, 32), (48, 32, 64)])
def test_the_graph_equals_the_torch_module_in_fp32(trained_like_model, shape):
    path, module = trained_like_model
    image = _input(shape)
    with torch.no_grad():
        expected = torch.softmax(module(torch.from_numpy(image)), dim=1)[0].numpy()
        paper_head = torch.softmax(module.forward_reference(torch.from_numpy(image)), dim=1)[0].numpy()
    network = OpenVinoNetwork(path, "fp32")
    probabilities = network.predict(image)
    assert network.precision == "fp32"
    assert probabilities.shape == (20, *shape) and probabilities.dtype == np.float32
    assert np.abs(probabilities - expected).max() < 1e-4
    assert np.abs(probabilities - paper_head).max() < 1e-4  # the head as drawn in the paper, too
    assert np.allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)


def test_left_right_flip_averages_the_mirrored_prediction(trained_like_model):
    path, _ = trained_like_model
    network = OpenVinoNetwork(path, "fp32")
    image = _input((32, 32, 48), seed=1)
    plain = network.predict(image)
    mirrored = network.predict(np.ascontiguousarray(image[..., ::-1]))[..., ::-1]
    assert np.allclose(network.predict(image, tta=True), (plain + mirrored) / 2, atol=1e-6)
    assert np.array_equal(network.predict(image), plain)  # a later call does not overwrite an earlier result


def test_the_shipped_model_agrees_with_torch_on_a_brain(tmp_path):
    """fp32: the same argmax as PyTorch's fp32 almost everywhere; auto: bf16 where native, as close to fp32 as
    PyTorch's own bf16 (BENCHMARKS.md: 0.05 % of voxels change argmax on a real head)."""
    from SegLossBrainLib.inference.segment import load_network, predict_probabilities, prepare_image

    prepared = prepare_image(oblique_demo())
    network, _ = load_network(str(SHIPPED), torch.device("cpu"))
    expected = predict_probabilities(network, prepared.tensor, torch.device("cpu"), precision="fp32").numpy()
    fp32 = OpenVinoNetwork(SHIPPED, "fp32").predict(prepared.array)
    assert np.abs(fp32 - expected).max() < 1e-3
    assert (fp32.argmax(0) != expected.argmax(0)).mean() < 1e-5
    auto = OpenVinoNetwork(SHIPPED, "auto")
    fast = auto.predict(prepared.array)
    assert auto.precision in ("bf16", "fp32")
    assert (fast.argmax(0) != expected.argmax(0)).mean() < 0.005


def test_a_model_file_that_does_not_fit_is_refused(tmp_path):
    from safetensors.numpy import load_file, save_file

    weights = load_file(str(SHIPPED))
    assert set(weights) == expected_tensor_names()
    del weights["decoders.3.main.0.weight"]
    damaged = tmp_path / "damaged.safetensors"
    save_file(weights, str(damaged))
    metadata = json.loads(SHIPPED.with_suffix(".json").read_text())
    import hashlib

    metadata["sha256"] = hashlib.sha256(damaged.read_bytes()).hexdigest()
    damaged.with_suffix(".json").write_text(json.dumps(metadata))
    with pytest.raises(ModelError, match="decoders.3.main.0.weight"):
        OpenVinoNetwork(damaged)
    vnet = save_model(build_network("vnet"), tmp_path / "vnet.safetensors", {"loss": {"name": "none"}})
    with pytest.raises(ModelError, match="wong2018"):
        OpenVinoNetwork(vnet)
    assert choose_engine("auto", "cpu", str(vnet)) == "torch"  # auto falls back; asking for openvino is refused
    with pytest.raises(EngineError, match="architecture"):
        choose_engine("openvino", "cpu", str(vnet))


def test_engine_choice(threshold_net):
    assert choose_engine("auto", "cpu", str(SHIPPED)) == "openvino"
    assert choose_engine("auto", "cpu", None) == "openvino"  # the installed default model
    assert choose_engine("torch", "cpu", str(SHIPPED)) == "torch"
    assert choose_engine("auto", "cuda", str(SHIPPED)) == "torch"
    assert choose_engine("auto", "cpu", threshold_net) == "torch"
    with pytest.raises(EngineError, match="device 'cuda'"):
        choose_engine("openvino", "cuda", str(SHIPPED))
    with pytest.raises(EngineError, match="unknown engine"):
        choose_engine("onnx", "cpu", str(SHIPPED))


def test_both_engines_segment_a_brain_alike(tmp_path):
    """The whole path, fp32 on both engines: the same labels and volumes on the input's own (oblique) grid."""
    from SegLossBrainLib.inference.segment import segment

    image = oblique_demo()
    results = {engine: segment(image, model=SHIPPED, device="cpu", precision="fp32", engine=engine,
                               with_confidence=True) for engine in ("torch", "openvino")}
    assert results["openvino"].engine == "openvino" and results["torch"].engine == "torch"
    a, b = (sitk.GetArrayFromImage(results[e].labels) for e in ("torch", "openvino"))
    assert (a != b).mean() < 1e-4
    assert results["openvino"].labels.GetDirection() == image.GetDirection()
    for name, volume in results["torch"].volumes_ml.items():
        assert results["openvino"].volumes_ml[name] == pytest.approx(volume, abs=0.05), name
    ca, cb = (sitk.GetArrayFromImage(results[e].confidence) for e in ("torch", "openvino"))
    assert np.abs(ca - cb).max() < 1e-3


def test_the_segment_command_runs_without_importing_torch(tmp_path):
    """``seglossbrain segment`` (then ``batch``) on a CPU with OpenVINO: labels written, and torch never imported
    (the second it costs is the point of the engine). A child process: this test's own torch import does not count."""
    image = oblique_demo()
    source = tmp_path / "brain.nii.gz"
    sitk.WriteImage(image, str(source))
    code = ("import sys; from SegLossBrainLib.cli import main; "
            f"code = main(['segment', {str(source)!r}, {str(tmp_path / 'labels.nii.gz')!r}, '--device', 'cpu', "
            "'--volumes', " + repr(str(tmp_path / "volumes.csv")) + "]); "
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH'); "
            f"code = code or main(['batch', {str(source)!r}, '--output-dir', {str(tmp_path / 'cohort')!r}, "
            "'--device', 'cpu']); "
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH'); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "SegLossBrain")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("NO-TORCH") == 2  # after segment, and after batch as well
    assert "device cpu, openvino " in done.stdout  # the result line names the engine that ran
    written = sitk.ReadImage(str(tmp_path / "labels.nii.gz"))
    assert written.GetSize() == image.GetSize()
    assert written.GetDirection() == pytest.approx(image.GetDirection(), abs=1e-6)
    assert len(np.unique(sitk.GetArrayFromImage(written))) == 20  # every structure found in the demo head


def test_an_instruction_set_cap_below_bf16_runs_fp32(monkeypatch, trained_like_model):
    """``ONEDNN_MAX_CPU_ISA=AVX2`` (how a CPU without AVX-512 is approximated, and what PyTorch honours) keeps
    ``auto`` at fp32: OpenVINO's own check reads the CPU's flags and would pick bf16 layers that cannot run."""
    path, _ = trained_like_model
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    network = OpenVinoNetwork(path, "auto")
    network.compile_for((32, 32, 32))
    assert network.precision == "fp32"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_amx")
    from SegLossBrainLib.cpu_engine.runner import _isa_capped_below_bf16

    assert not _isa_capped_below_bf16()


def test_batch_on_openvino_gives_what_segment_gives(tmp_path):
    """Two heads of different grids through one cohort: each labelmap equals ``segment``'s for that head (the same
    engine and precision; the compiled grid changes between the cases), and the model event names the engine."""
    from SegLossBrainLib.cli import main
    from SegLossBrainLib.inference.segment import segment

    cases = tmp_path / "in"
    cases.mkdir()
    demo = oblique_demo()
    smaller = sitk.RegionOfInterest(demo, [160, 192, 160], [8, 16, 8])  # another network grid
    images = {"a": demo, "b": smaller}
    for name, image in images.items():
        sitk.WriteImage(image, str(cases / f"{name}.nii.gz"))
        images[name] = sitk.ReadImage(str(cases / f"{name}.nii.gz"))  # as batch reads it (NIfTI's float32 header)
    out = tmp_path / "out"
    assert main(["--progress-json", "batch", str(cases), "--output-dir", str(out), "--device", "cpu",
                 "--precision", "fp32"]) == 0
    for name, image in images.items():
        expected = segment(image, device="cpu", precision="fp32")
        assert expected.engine == "openvino"
        written = sitk.ReadImage(str(out / f"{name}_labels.nii.gz"))
        assert np.array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(expected.labels)), name
