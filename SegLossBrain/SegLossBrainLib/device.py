"""Where the engine computes: the device (CUDA, Apple MPS or the CPU) and the number of CPU threads. torch is
imported by the functions that need it: ``gpu_possible`` answers without it (the CPU engine never loads torch)."""
from __future__ import annotations

import os
import platform
import shutil

import numpy as np


def select_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; a named device that is absent is an error."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available to torch; use --device cpu or auto")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' requested but Apple MPS is not available; use --device cpu or auto")
    if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):  # cuda:N, one GPU per rank
        raise ValueError(f"unknown device {device!r}; choose auto, cpu, cuda or mps")
    return torch.device(device)


def training_device(device: str = "auto") -> str:
    """The device a training run uses: ``auto`` is CUDA when available, else the CPU (not Apple MPS)."""
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def set_threads(threads: int | None) -> None:
    """Let torch use ``threads`` CPU threads; None or 0 keeps torch's default."""
    import torch

    if threads:
        torch.set_num_threads(threads)


def seed_numpy(seed: int = 0) -> None:
    """Seed NumPy's global generator. The engine draws from its own seeded generators; this keeps anything that
    uses the global one (third-party code) repeatable from run to run as well."""
    np.random.seed(seed)


PRECISIONS = ("auto", "fp32", "bf16")  # the --precision choices of every command


def fast_precision(device: torch.device) -> str:
    """``bf16`` where bf16 autocast is native and about 2x faster (CUDA GPUs that support it, CPUs with
    AVX512-BF16/AMX), else ``fp32``: emulated bf16 on an older CPU is slower than fp32 (BENCHMARKS.md; a small
    bf16 conv step took 3.3 s against 0.5 s in fp32 on an AVX2-only CPU). oneDNN's check honours
    ``ONEDNN_MAX_CPU_ISA`` (``AVX2`` makes an AVX-512 machine answer as an AVX2-only one)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        try:  # oneDNN's own check for native bf16 (no public equivalent in torch 2.x)
            return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
        except (AttributeError, RuntimeError):
            return "fp32"
    return "fp32"


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``fast_precision(device)``; ``fp32``/``bf16`` as given (bf16 asked for on a CPU without
    native bf16 is honoured, only slower)."""
    import torch

    if precision == "auto":
        return fast_precision(torch.device(device))
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose {', '.join(PRECISIONS)}")
    return precision


def gpu_possible() -> bool:
    """Whether ``--device auto`` could find a GPU, answered without importing torch (a second or more): False for
    a CPU-only torch build ("+cpu"), or when no GPU driver is visible (NVIDIA or ROCm device files on Linux,
    nvidia-smi on Windows); Apple computers may have MPS. True sends auto to torch, which decides."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        if version("torch").endswith("+cpu"):
            return False
    except PackageNotFoundError:
        return False
    system = platform.system()
    if system == "Darwin":
        return True
    if system == "Linux":
        return any(os.path.exists(node) for node in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd"))
    return shutil.which("nvidia-smi") is not None
