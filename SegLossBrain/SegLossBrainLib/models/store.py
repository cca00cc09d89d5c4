"""Installed models and the user model store: list shipped and user versions, resolve a model name, the active
choice; activate, revert, delete versions; save a new one.

Policy (chosen to keep what segments a user's scans explicit):

* The active version is named by ``active.json`` in the store, which only this file reads and writes;
  ``default_model_path()`` follows it. Without it the shipped default is active. ``revert`` removes the pointer.
* Any listed version, shipped or user, can be activated; it is loaded once first so that a corrupt or
  mismatched file is refused at activation, not at the next segmentation.
* Shipped versions are never deleted or written. The active version cannot be deleted: revert or
  activate another first (deleting it would silently change which model segments the next scan).
* New versions get a fresh name (letters, digits, ``.``, ``_``, ``-``); a name already used by a shipped or
  user model is refused, so a version, once written, never changes.
* Writes are atomic (temporary file + rename); a failed save (unwritable store, disk full) removes what it
  wrote and says so.
* One fine-tune at a time per store: ``lock.py``.
"""
from __future__ import annotations

import errno
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..imageio.atomic import write_bytes_atomic
from ..paths import user_model_store
from ..resources import shipped_models_dir
from .files import ModelError, load_model, metadata_path, read_metadata, save_model

DEFAULT_MODEL_NAME = "wong2018-explog-fsmaps"  # the earlier defaults, wong2018-explog-fs and wong2018-explog
# (synthetic brains only), stay shipped and selectable by name
ACTIVE_POINTER = "active.json"  # in the user model store: the version used when none is named
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


class StoreError(ValueError):
    """The user model store refuses an operation; the message says why and what to do."""


class NoModelError(ModelError):
    """No trained model is installed."""


@dataclass
class ModelEntry:
    name: str
    path: Path  # the .safetensors file
    source: str  # "shipped" or "user"
    metadata: dict = field(default_factory=dict)


@dataclass
class ModelVersion:
    name: str
    source: str  # "shipped" or "user"
    path: Path
    active: bool
    metadata: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """What a listing shows: the version, where it came from and how it scored (JSON-friendly)."""
        meta = self.metadata
        after = (meta.get("validation") or {}).get("after") or {}
        before = (meta.get("validation") or {}).get("before") or {}
        return {"name": self.name, "source": self.source, "active": self.active, "path": str(self.path),
                "loss": (meta.get("loss") or {}).get("name"), "steps": meta.get("steps"),
                "base": (meta.get("base") or {}).get("name"), "created": meta.get("created"),
                "dice_before": before.get("mean"), "dice_after": after.get("mean")}


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


def model_identity(model: str | os.PathLike | None) -> dict:
    """What names a result's model: ``name``, ``source`` (shipped, user or file), ``path``, ``sha256`` (recorded at
    save and checked at load) and the ``metadata``, for ``model`` as ``resolve_model`` takes it. Reads no weights."""
    path = resolve_model(model)
    metadata = read_metadata(path)
    source = next((e.source for e in list_models() if e.path.resolve() == path.resolve()), "file")
    return {"name": path.stem, "source": source, "path": str(path), "sha256": str(metadata.get("sha256", "")),
            "metadata": metadata}


def list_versions() -> list[ModelVersion]:
    """Shipped then user versions, the active one marked (none marked when no model is installed)."""
    entries = list_models()
    try:
        active_path = default_model_path().resolve()
    except ModelError:  # no model installed, or a broken pointer: nothing is active
        active_path = None
    return [ModelVersion(e.name, e.source, e.path, active_path is not None and e.path.resolve() == active_path,
                         e.metadata) for e in entries]


def _find(name: str) -> ModelEntry:
    matches = [e for e in list_models() if e.name == name]
    if not matches:
        known = ", ".join(e.name for e in list_models()) or "none"
        raise StoreError(f"no model version named {name!r} (known: {known})")
    return matches[0]  # the same choice as resolve_model: shipped first


def worse_than_base(metadata: dict) -> str | None:
    """Why a fine-tuned version should not become the default silently: its own validation scored it below its base
    (mean Dice before -> after), or None."""
    validation = metadata.get("validation") or {}
    before, after = (validation.get("before") or {}).get("mean"), (validation.get("after") or {}).get("mean")
    if before is None or after is None or after >= before:
        return None
    base = (metadata.get("base") or {}).get("name", "its base")
    return (f"on its own validation case it scored worse than its base {base} (mean Dice {before:.3f} -> "
            f"{after:.3f})")


def activate(name: str, force: bool = False) -> ModelVersion:
    """Make ``name`` the version used when none is named. A version that scored worse than its base on its own
    validation is refused unless ``force``: every later segmentation would use it without a word."""
    entry = _find(name)
    worse = worse_than_base(entry.metadata)
    if worse and not force:
        raise StoreError(f"not activating {name!r}: {worse}. Pass --force to activate it anyway, or keep the current "
                         "model")
    try:
        load_model(entry.path)  # refuse now what would fail at the next segmentation
    except ModelError as error:
        raise StoreError(f"cannot activate {name!r}: {error}") from None
    store = ensure_writable()
    pointer = {"name": entry.name, "source": entry.source, "sha256": entry.metadata.get("sha256"),
               "activated": timestamp()}
    _write_atomic(store / ACTIVE_POINTER, json.dumps(pointer, indent=2).encode(), store)
    return ModelVersion(entry.name, entry.source, entry.path, True, entry.metadata)


def revert() -> bool:
    """Use the shipped default again. True when a user choice was removed, False when there was none."""
    pointer = user_model_store() / ACTIVE_POINTER
    if not pointer.exists():
        return False
    try:
        pointer.unlink()
    except OSError as error:
        raise StoreError(f"cannot remove {pointer} ({error.strerror}); check the folder's permissions") from None
    return True


def delete(name: str) -> Path:
    """Delete the user version ``name`` (both files). Shipped and active versions are refused."""
    users = [e for e in list_models() if e.name == name and e.source == "user"]
    if not users:
        if any(e.name == name for e in list_models()):
            raise StoreError(f"{name!r} is a shipped model; shipped models are part of the installation and are "
                             "never deleted")
        raise StoreError(f"no user model version named {name!r}")
    entry = users[0]
    try:
        pointer = active_pointer()
    except ModelError:  # an unreadable choice protects nothing
        pointer = None
    if pointer and pointer.get("name") == name and pointer.get("source", "user") == "user":
        raise StoreError(f"{name!r} is the active model; run 'seglossbrain models revert' (or activate another "
                         "version) before deleting it")
    try:
        # Weights first: without them the version is no longer listed or loadable, even if the .json stays.
        entry.path.unlink()
        metadata_path(entry.path).unlink(missing_ok=True)
    except OSError as error:
        raise StoreError(f"cannot delete {entry.path} ({error.strerror})") from None
    return entry.path


def check_new_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or name.endswith((".safetensors", ".json")):
        raise StoreError(f"model name {name!r}: use 1-80 letters, digits, '.', '_' or '-', starting with a letter or "
                         "digit, without a file extension")
    if name == Path(ACTIVE_POINTER).stem:
        raise StoreError(f"model name {name!r} is reserved; choose another")
    for entry in list_models():
        if entry.name == name:
            raise StoreError(f"a {entry.source} model named {name!r} exists already ({entry.path}); versions are never "
                             "overwritten, choose another name")
    if (user_model_store() / f"{name}.safetensors").exists():
        raise StoreError(f"{user_model_store() / (name + '.safetensors')} exists; choose another name")


def describe_os_error(error: OSError, store: Path) -> str:
    if error.errno == errno.ENOSPC or error.errno == getattr(errno, "EDQUOT", -1):
        return (f"no space left for the user model store {store} ({error.strerror}); free some space (a model "
                "takes about 10 MB) or set SEGLOSSBRAIN_MODEL_STORE to another folder. Nothing was written.")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"the user model store {store} is not writable ({error.strerror}); fix its permissions or set "
                "SEGLOSSBRAIN_MODEL_STORE to a writable folder. Nothing was written.")
    return (f"cannot write to the user model store {store} ({error.strerror or error}); set "
            "SEGLOSSBRAIN_MODEL_STORE to a writable folder. Nothing was written.")


def ensure_writable(store: Path | None = None) -> Path:
    """Create the store if needed and prove it takes a file; a clear StoreError otherwise."""
    store = Path(store) if store else user_model_store()
    try:
        store.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".tmp-probe-", dir=store)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise StoreError(describe_os_error(error, store)) from None
    return store


def save_version(network, name: str, metadata: dict) -> Path:
    """Write a new user version ``name`` atomically; on failure nothing of it remains."""
    store = ensure_writable()
    check_new_name(name)
    path = store / f"{name}.safetensors"
    try:
        return save_model(network, path, {**metadata, "created": metadata.get("created") or timestamp()})
    except OSError as error:
        # save_model renames each file into place whole; if the second failed, the first must go too.
        path.unlink(missing_ok=True)
        metadata_path(path).unlink(missing_ok=True)
        raise StoreError(describe_os_error(error, store)) from None


def _write_atomic(path: Path, data: bytes, store: Path) -> None:
    try:
        write_bytes_atomic(path, data)
    except OSError as error:
        raise StoreError(describe_os_error(error, store)) from None


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
