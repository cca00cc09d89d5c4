"""The contract with the engine's command line: how to call ``seglossbrain segment`` and how to read its output.

The module never imports the engine: it only builds argument lists and parses the JSON lines that
``--progress-json`` prints, so the Slicer process stays free of torch.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import paths

DEVICES = ("auto", "cuda", "cpu", "mps")

# Phrases that torch, CUDA and MPS use when a device runs out of memory. Matched case-insensitively anywhere
# in an error message or in the child's last stderr lines.
_OUT_OF_MEMORY_PHRASES = (
    "out of memory",
    "outofmemoryerror",
    "cuda error: out of memory",
    "cublas_status_alloc_failed",
    "mps backend out of memory",
)


@dataclass(frozen=True)
class SegmentOptions:
    model_path: str | None = None
    device: str = "auto"
    tta: bool = False
    confidence: bool = False
    hemispheres: bool = False
    force: bool = False  # segment even when the engine finds no brain
    output_spacing: float | None = None  # mm: labels on an isotropic grid covering the input; None: its own grid
    pial_refinement: bool = True  # False: the network's own cortex/outside boundary (--no-pial-refinement)

    def on_cpu(self) -> "SegmentOptions":
        return replace(self, device="cpu")


@dataclass(frozen=True)
class Event:
    """One line of the child's output. ``kind`` is progress, log, result, error, or text (not JSON)."""

    kind: str
    message: str = ""
    fraction: float | None = None
    data: dict = field(default_factory=dict)


def segment_arguments(input_path, output_path, options: SegmentOptions, confidence_path=None) -> list[str]:
    if options.device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {options.device!r}")
    args = ["segment", str(input_path), str(output_path), "--progress-json", "--device", options.device]
    if options.model_path:
        args += ["--model", str(options.model_path)]
    if options.tta:
        args.append("--tta")
    if not options.pial_refinement:
        args.append("--no-pial-refinement")
    if options.hemispheres:
        args.append("--hemispheres")
    if options.force:
        args.append("--force")
    if options.output_spacing is not None:
        args += ["--output-spacing", repr(float(options.output_spacing))]
    if confidence_path is not None:
        args += ["--confidence", str(confidence_path)]
    return args


def parse_line(line: str) -> Event:
    """Turn one stdout line into an Event. Anything that is not one of our JSON events is kept as text, so a
    library that prints to stdout cannot break the protocol; it only shows up in the log."""
    text = line.rstrip("\r\n")
    stripped = text.strip()
    if not stripped.startswith("{"):
        return Event("text", text)
    try:
        data = json.loads(stripped)
    except ValueError:
        return Event("text", text)
    if not isinstance(data, dict) or data.get("event") not in ("progress", "log", "result", "error"):
        return Event("text", text)
    kind = data["event"]
    fraction = None
    if kind == "progress":
        try:
            fraction = min(1.0, max(0.0, float(data.get("fraction", 0.0))))
        except (TypeError, ValueError):
            fraction = None
    return Event(kind, str(data.get("message") or ""), fraction, data)


def is_out_of_memory(text: str | None) -> bool:
    lowered = (text or "").lower()
    return any(phrase in lowered for phrase in _OUT_OF_MEMORY_PHRASES)


def python_executable() -> str:
    """The Python that runs the engine. Inside Slicer ``sys.executable`` may be the Slicer launcher itself, so
    prefer Slicer's ``PythonSlicer`` (same site-packages as Slicer, without the GUI); elsewhere use this Python."""
    names = ("PythonSlicer.exe", "PythonSlicer") if os.name == "nt" else ("PythonSlicer",)
    folders = []
    for folder in (Path(sys.executable).parent, Path(sys.executable).resolve().parent):
        folders += [folder, folder.parent / "bin"]  # Slicer keeps its executables in bin/
    for name in names:
        for folder in folders:
            if (folder / name).is_file():
                return str(folder / name)
        found = shutil.which(name)
        if found:
            return found
    return sys.executable


def engine_command(python: str | None = None) -> list[str]:
    return [python or python_executable(), "-m", "SegLossBrainLib.cli"]


def engine_environment(base: dict | None = None) -> dict:
    """Environment of the child: the engine importable without installing it, unbuffered output so progress
    arrives as it happens, and the resources folder of the extension when it is not beside the package."""
    env = dict(os.environ if base is None else base)
    existing = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(paths.MODULE_DIR) + (os.pathsep + existing if existing else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONIOENCODING", "utf-8")
    if "SEGLOSSBRAIN_RESOURCES" not in env:
        try:
            env["SEGLOSSBRAIN_RESOURCES"] = str(paths.resources_dir())
        except FileNotFoundError:
            pass  # the engine then looks inside its own package (wheel install)
    return env
