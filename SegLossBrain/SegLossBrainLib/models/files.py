"""Model files: weights (safetensors) + metadata (JSON) + sha256, and where models are found.

A model is two files side by side: ``NAME.safetensors`` (tensors only: no pickle, nothing executes on load)
and ``NAME.json`` (architecture, label table version, loss and its parameters, training data, steps,
metrics, and the sha256 of the weights file). Loading refuses a file whose checksum, architecture, class
count, label table or tensor names don't match, with a message that says which and what to do. Weights are
stored as float16 (half the size, no measurable change in the segmentation); they are used in float32.

Shipped models live in ``Resources/Models/`` and are never written to. User models (fine-tuned versions)
live in the user model store, ``~/.seglossbrain/models`` or ``$SEGLOSSBRAIN_MODEL_STORE``. A version made
active (``model_store.activate``) is named by ``active.json`` in that store; without it the shipped default
is used.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..labels import load_label_table
from ..paths import user_model_store
from ..resources import shipped_models_dir

FORMAT_VERSION = 1
DEFAULT_MODEL_NAME = "wong2018-explog"
ACTIVE_POINTER = "active.json"  # in the user model store: the version used when none is named


class ModelError(ValueError):
    """A model file is missing, corrupted, tampered with, or made for something else."""


class NoModelError(ModelError):
    """No trained model is installed."""


@dataclass
class ModelEntry:
    name: str
    path: Path  # the .safetensors file
    source: str  # "shipped" or "user"
    metadata: dict = field(default_factory=dict)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def metadata_path(weights_path: Path) -> Path:
    return Path(weights_path).with_suffix(".json")


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_model(network, path: str | os.PathLike, metadata: dict, overwrite: bool = False) -> Path:
    """Save ``network``'s weights (float16) and ``metadata`` to ``path`` (.safetensors) + .json, atomically.

    Refuses to write into the shipped models folder and, unless ``overwrite``, over an existing model."""
    import torch
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ModelError(f"{path}: model files end in .safetensors")
    if _is_within(path, shipped_models_dir()) and path.exists():
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
    _atomic_write_bytes(path, data)
    _atomic_write_bytes(metadata_path(path), json.dumps(record, indent=2).encode())
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


def load_model(path: str | os.PathLike, device: str = "cpu"):
    """Build the network a model file describes and load its weights, after checking everything."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load

    from ..networks import build_network

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


def _is_within(path: Path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except (ValueError, FileNotFoundError):
        return False


def list_models() -> list[ModelEntry]:
    """Shipped models, then user models; each with its metadata (unreadable ones are skipped)."""
    entries = []
    for source, folder in (("shipped", shipped_models_dir()), ("user", user_model_store())):
        if not folder.is_dir():
            continue
        for weights in sorted(folder.glob("*.safetensors")):
            try:
                entries.append(ModelEntry(weights.stem, weights, source, read_metadata(weights)))
            except ModelError:
                continue
    return entries


def active_pointer() -> dict | None:
    """The user's choice of model (``active.json`` in the user store), or None when there is none."""
    path = user_model_store() / ACTIVE_POINTER
    if not path.is_file():
        return None
    try:
        pointer = json.loads(path.read_text())
        str(pointer["name"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ModelError(f"{path} (the active model choice) is unreadable; run 'seglossbrain models revert' to use "
                         "the shipped model again, or activate a version") from None
    return pointer


def _active_model_path(pointer: dict) -> Path:
    # An active choice that no longer resolves is an error, not a silent fall-back: results would change
    # without anyone having asked for it.
    for entry in list_models():
        if entry.name == pointer["name"] and entry.source == pointer.get("source", "user"):
            if pointer.get("sha256") and entry.metadata.get("sha256") != pointer["sha256"]:
                raise ModelError(f"the active model {entry.name!r} has changed since it was activated (sha256 differs); "
                                 "activate it again if that is intended, or run 'seglossbrain models revert'")
            return entry.path
    raise ModelError(f"the active model {pointer['name']!r} is no longer in the model store; run 'seglossbrain "
                     "models revert' to use the shipped model, or activate another version")


def default_model_path() -> Path:
    """The model used when none is named: the active user choice, else the shipped default, else any shipped
    model."""
    pointer = active_pointer()
    if pointer is not None:
        return _active_model_path(pointer)
    shipped = [e for e in list_models() if e.source == "shipped"]
    for entry in shipped:
        if entry.name == DEFAULT_MODEL_NAME:
            return entry.path
    if shipped:
        return shipped[0].path
    raise NoModelError(
        "no trained SegLossBrain model is installed yet (Resources/Models/ holds none). Train one with "
        "'seglossbrain train' or pass --model PATH to a model file (.safetensors with its .json)."
    )


def resolve_model(model: str | os.PathLike | None) -> Path:
    """A model given as None (default), a path, or the name of a shipped or user model."""
    if model is None:
        return default_model_path()
    candidate = Path(model)
    if candidate.suffix == ".safetensors" or candidate.exists():
        if not candidate.is_file():
            raise ModelError(f"model file {candidate} not found")
        return candidate
    for entry in list_models():
        if entry.name == str(model):
            return entry.path
    names = ", ".join(e.name for e in list_models()) or "none installed"
    raise ModelError(f"no model named {model!r} (known: {names}); give a name or a path to a .safetensors file")
