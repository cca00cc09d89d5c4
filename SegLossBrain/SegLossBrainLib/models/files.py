"""Model files: weights (safetensors) + metadata (JSON) + sha256.

A model is two files side by side: ``NAME.safetensors`` (tensors only: no pickle, nothing executes on load)
and ``NAME.json`` (architecture, label table version, loss and its parameters, training data, steps,
metrics, and the sha256 of the weights file). Loading refuses a file whose checksum, architecture, class
count, label table or tensor names don't match, with a message that says which and what to do. Weights are
stored as float16 (half the size, no measurable change in the segmentation); they are used in float32.

Shipped models live in ``Resources/Models/`` and are never written to. Which models are installed, which one
is active and what a model name means is the user model store's business (``store.py``).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..imageio.atomic import write_bytes_atomic
from ..labels import load_label_table
from ..resources import shipped_models_dir

FORMAT_VERSION = 1


class ModelError(ValueError):
    """A model file is missing, corrupted, tampered with, or made for something else."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def metadata_path(weights_path: Path) -> Path:
    return Path(weights_path).with_suffix(".json")


def save_model(network, path: str | os.PathLike, metadata: dict, overwrite: bool = False) -> Path:
    """Save ``network``'s weights (float16) and ``metadata`` to ``path`` (.safetensors) + .json, atomically.

    Refuses to write into the shipped models folder and, unless ``overwrite``, over an existing model."""
    import torch
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ModelError(f"{path}: model files end in .safetensors")
    if is_within(path, shipped_models_dir()) and path.exists():
        raise ModelError(f"{path} is a shipped model; shipped weights are never overwritten, save under another name")
    if path.exists() and not overwrite:
        raise ModelError(f"{path} exists; choose another name or pass overwrite=True")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        name: (value.detach().to(torch.float16) if value.is_floating_point() else value.detach()).contiguous().cpu()
        for name, value in network.state_dict().items()
    }
    data = save(tensors)
    table = load_label_table()
    record = {
        "format_version": FORMAT_VERSION,
        "architecture": getattr(network, "architecture", type(network).__name__.lower()),
        "num_classes": table.num_classes,
        "in_channels": getattr(network, "in_channels", 1),
        "label_table_version": table.version,
        "label_names": table.names,
        **metadata,
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    write_bytes_atomic(path, data)
    write_bytes_atomic(metadata_path(path), json.dumps(record, indent=2).encode())
    return path


def read_metadata(path: str | os.PathLike) -> dict:
    path = Path(path)
    meta_file = metadata_path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} not found")
    if not meta_file.is_file():
        raise ModelError(f"model metadata {meta_file} not found: a model is a .safetensors file with its .json beside it")
    try:
        return json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelError(f"model metadata {meta_file} is not valid JSON ({error}); reinstall the model") from None


def verified_model_file(path: str | os.PathLike) -> tuple[bytes, dict]:
    """(the weights file's bytes, its metadata) after checking the checksum, class count and label table."""
    path = Path(path)
    metadata = read_metadata(path)
    expected = metadata.get("sha256")
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if expected != actual:
        raise ModelError(
            f"model file {path} does not match its recorded checksum (sha256 {actual[:12]}…, expected "
            f"{str(expected)[:12]}…): it is truncated, corrupted or was modified; reinstall or re-download it"
        )
    table = load_label_table()
    if metadata.get("num_classes") != table.num_classes:
        raise ModelError(
            f"model {path.name} predicts {metadata.get('num_classes')} classes but this SegLossBrain uses "
            f"{table.num_classes} (19 structures + background); use a model made for this label table"
        )
    if metadata.get("label_table_version") != table.version:
        raise ModelError(
            f"model {path.name} was trained on label table {metadata.get('label_table_version')}, this installation "
            f"has {table.version}; the label order differs, so its output would be mislabelled"
        )
    return data, metadata


def load_weights(path: str | os.PathLike) -> tuple[dict, dict]:
    """(tensor name -> numpy array, metadata) of a model file, checked as ``load_model`` checks it, without
    torch: for the CPU engine, which builds its graph from these arrays (``cpu_engine/``)."""
    from safetensors.numpy import load

    data, metadata = verified_model_file(path)
    try:
        return load(data), metadata
    except Exception as error:  # safetensors raises its own error types for a damaged header
        raise ModelError(f"model file {path} is not a valid safetensors file ({error})") from None


def load_model(path: str | os.PathLike, device: str = "cpu"):
    """Build the network a model file describes and load its weights, after checking everything."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    from ..networks import build_network

    path = Path(path)
    data, metadata = verified_model_file(path)
    table = load_label_table()
    try:
        network = build_network(metadata.get("architecture", ""), in_channels=metadata.get("in_channels", 1),
                                num_classes=table.num_classes)
    except ValueError as error:
        raise ModelError(f"model {path.name}: {error}") from None
    try:
        tensors = load(data)
    except (SafetensorError, Exception) as error:
        raise ModelError(f"model file {path} is not a valid safetensors file ({error})") from None
    state = network.state_dict()
    missing, unexpected = sorted(set(state) - set(tensors)), sorted(set(tensors) - set(state))
    if missing or unexpected:
        raise ModelError(
            f"model file {path.name} does not fit architecture {metadata.get('architecture')!r}: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for name, value in tensors.items():
        if value.shape != state[name].shape:
            raise ModelError(f"model file {path.name}: tensor {name} has shape {tuple(value.shape)}, "
                             f"expected {tuple(state[name].shape)}")
        state[name] = value.to(state[name].dtype)
    network.load_state_dict(state)
    return network.to(device).eval(), metadata


def is_within(path: Path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except (ValueError, FileNotFoundError):
        return False
