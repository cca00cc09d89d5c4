"""Compile a model file's OpenVINO graph for a grid and run it on the CPU; which engine a command uses.

``--engine auto`` (every command's default) runs a single scan here when OpenVINO is installed, the device is the
CPU (``auto`` with no GPU driver visible, or ``cpu``), and the model is a wong2018 network; otherwise PyTorch runs
it as before. ``--precision`` means the same for both engines: ``auto`` asks for bf16, which OpenVINO grants only
where the CPU computes it natively (AVX512-BF16 or AMX) and otherwise runs fp32; the precision that ran is
reported, read back from the compiled model.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..models.files import ModelError, load_weights

ENGINES = ("auto", "openvino", "torch")
_HINTS = {"auto": "bf16", "bf16": "bf16", "fp32": "f32"}


class EngineError(ValueError):
    """The engine asked for cannot run this request (not installed, a GPU device, another architecture)."""


def openvino_missing() -> str | None:
    """Why OpenVINO cannot be used here, or None. Looked up, not imported: the import (0.1 s) happens in the thread
    that compiles the graph, beside the resampling."""
    from importlib.util import find_spec

    if find_spec("openvino") is None:  # not installed, or no wheel for this platform
        return "OpenVINO is not installed; pip install openvino, or use --engine torch"
    return None


def choose_engine(engine: str, device: str, model) -> str:
    """``openvino`` or ``torch`` for ``segment``'s arguments; ``engine`` is auto, openvino or torch.
    ``model`` None, a name or a path can run on OpenVINO; a loaded torch module only on torch."""
    from ..device import gpu_possible

    if engine not in ENGINES:
        raise EngineError(f"unknown engine {engine!r}; choose {', '.join(ENGINES)}")
    if engine == "torch":
        return "torch"
    reasons = []
    if not (model is None or isinstance(model, (str, os.PathLike))):
        reasons.append("the model is a network object, not a model file")
    if device not in ("auto", "cpu"):
        reasons.append(f"OpenVINO runs on the CPU here, device {device!r} was asked for")
    elif device == "auto" and gpu_possible():
        reasons.append("a GPU may be present (--device auto lets PyTorch look for it)")
    missing = openvino_missing()
    if missing:
        reasons.append(missing)
    if not reasons:
        from ..models.files import read_metadata
        from ..models.store import resolve_model

        architecture = read_metadata(resolve_model(model)).get("architecture")
        if architecture != "wong2018":
            reasons.append(f"the model's architecture is {architecture!r}; the OpenVINO graph is wong2018's")
    if reasons and engine == "openvino":
        raise EngineError(f"--engine openvino cannot run this: {'; '.join(reasons)}")
    return "torch" if reasons else "openvino"


class OpenVinoNetwork:
    """A model file's network, compiled per input grid on first use. ``precision``: auto, fp32, bf16 or None
    (fp32, as ``inference.segment.predict_probabilities`` on a CPU)."""

    def __init__(self, path: str | os.PathLike, precision: str | None = "auto"):
        from .openvino_graph import check_tensor_names

        precision = "fp32" if precision is None else precision  # None: as the torch path's CPU default
        if precision not in _HINTS:
            raise ValueError(f"precision {precision!r}: choose {', '.join(_HINTS)}")
        self.weights, self.metadata = load_weights(path)
        if self.metadata.get("architecture") != "wong2018":
            raise ModelError(f"model {Path(path).name}: the OpenVINO engine runs wong2018 networks, not "
                             f"{self.metadata.get('architecture')!r}; use --engine torch")
        check_tensor_names(self.weights, Path(path).name)
        self.requested = precision
        self.precision = None  # what ran: set by the first compile
        self._compiled: dict[tuple, object] = {}

    def compile_for(self, shape: tuple[int, int, int]):
        """The infer request for grid ``shape`` (D, H, W), compiled on first use; sets ``precision``."""
        import openvino as ov

        from .openvino_graph import build_graph

        if shape not in self._compiled:
            self._compiled.clear()  # one grid at a time: a compiled model holds its working memory (a cohort's
            # heads differ in size; recompiling takes 0.2 s, keeping them all would grow without bound)
            hint = _HINTS[self.requested]
            if hint == "bf16" and _isa_capped_below_bf16():
                hint = "f32"
            model = build_graph(self.weights, shape)
            try:
                compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                                  "PERFORMANCE_HINT": "LATENCY"})
            except RuntimeError:  # no bf16 kernel for a layer on this CPU: fp32 always compiles
                if hint == "f32":
                    raise
                compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                                  "PERFORMANCE_HINT": "LATENCY"})
            granted = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
            self.precision = "bf16" if "bf16" in granted or "bfloat16" in granted else "fp32"
            self._compiled[shape] = compiled.create_infer_request()
        return self._compiled[shape]

    def predict(self, image: np.ndarray, tta: bool = False) -> np.ndarray:
        """Softmax probabilities [C, D, H, W] (float32) for a normalised [1, 1, D, H, W] array. With ``tta`` the
        left-right mirrored image is segmented too and the two averaged (as ``inference.segment``'s torch path)."""
        import openvino as ov

        shape = tuple(int(s) for s in image.shape[2:])
        request = self.compile_for(shape)
        views = [image, image[..., ::-1]] if tta else [image]
        results = []
        for view in views:
            # the request writes into an array of ours: nothing is copied out, and the next call cannot overwrite it
            output = np.empty((1, request.model_outputs[0].get_partial_shape()[1].get_length(), *shape), np.float32)
            request.set_output_tensor(0, ov.Tensor(output, shared_memory=True))
            request.infer({0: np.ascontiguousarray(view, dtype=np.float32)})
            results.append(output[0])
        if tta:
            results[0] += results[1][..., ::-1]
            results[0] *= 0.5
        return results[0]


_BELOW_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def _isa_capped_below_bf16() -> bool:
    """Whether oneDNN's instruction-set cap (``ONEDNN_MAX_CPU_ISA``, as PyTorch honours it) excludes native bf16.
    OpenVINO's own check reads the CPU's flags only, so under such a cap it would still choose bf16 layers."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
    return cap.upper() in _BELOW_BF16
