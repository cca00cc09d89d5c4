"""Device choice and CPU threads."""
import numpy as np
import pytest
import torch

from SegLossBrainLib import device


def test_named_devices_and_auto():
    assert device.select_device("cpu").type == "cpu"
    assert device.select_device("auto").type in ("cuda", "mps", "cpu")
    assert device.training_device("cpu") == "cpu"
    assert device.training_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        device.select_device("tpu")


def test_threads_and_numpy_seed_are_separate_steps():
    before = torch.get_num_threads()
    try:
        device.set_threads(1)
        assert torch.get_num_threads() == 1
        device.set_threads(None)  # keeps the current setting
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    device.seed_numpy(3)
    first = np.random.rand()
    device.seed_numpy(3)
    assert np.random.rand() == first


def test_precision_auto_is_bf16_only_where_the_cpu_has_it_natively(monkeypatch):
    cpu = torch.device("cpu")
    assert device.resolve_precision("fp32", cpu) == "fp32" and device.resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="choose auto, fp32, bf16"):
        device.resolve_precision("fp16", cpu)
    for native in (True, False):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
        assert device.fast_precision(cpu) == device.resolve_precision("auto", cpu) == ("bf16" if native else "fp32")


def test_an_avx2_only_cpu_gets_fp32():
    """oneDNN's bf16 check honours ONEDNN_MAX_CPU_ISA: an AVX-512 machine limited to AVX2 answers as an AVX2-only
    CPU would (there bf16 is emulated, ~6x slower than fp32)."""
    import os
    import subprocess
    import sys

    code = "import torch; from SegLossBrainLib.device import resolve_precision; print(resolve_precision('auto', 'cpu'))"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "fp32", result.stderr


class AutocastProbe(torch.nn.Module):
    """Answers background everywhere and records whether its forward ran under CPU autocast, and in what dtype."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.seen = []

    def forward(self, x):
        self.seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        logits = torch.zeros(x.shape[0], 20, *x.shape[2:])
        logits[:, 0] = 10.0
        return logits


@pytest.mark.parametrize("native", [True, False])
def test_inference_autocast_follows_the_cpus_capability(monkeypatch, native):
    from conftest import phantom
    from SegLossBrainLib.inference.segment import segment

    monkeypatch.setattr(device, "fast_precision", lambda chosen: "bf16" if native else "fp32")
    image, _ = phantom(size=(40, 40, 40), spacing=(2.0, 2.0, 2.0))
    probe = AutocastProbe()
    result = segment(image, model=probe, device="cpu", precision="auto", force=True)
    assert probe.seen == [torch.bfloat16 if native else None]
    assert result.precision == ("bf16" if native else "fp32")
    probe.seen.clear()
    segment(image, model=probe, device="cpu", precision="fp32", force=True)
    assert probe.seen == [None]


def test_train_resolves_auto_precision_by_capability(monkeypatch, tmp_path):
    from SegLossBrainLib.cli import main
    from SegLossBrainLib.training import trainer

    seen = {}

    def train(config, resume=False, on_event=None):
        seen["precision"] = config.precision
        return {"status": "finished"}

    monkeypatch.setattr(trainer, "train", train)
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(device, "fast_precision", lambda chosen, native=native: "bf16" if native else "fp32")
        assert main(["train", "--label-maps", "a.nii.gz,b.nii.gz", "--validation-maps", "", "--steps", "1",
                     "--run-dir", str(tmp_path), "--device", "cpu"]) == 0
        assert seen["precision"] == expected
