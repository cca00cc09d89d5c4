"""The user model store: list, activate, revert, delete versions; save a new one; one fine-tune at a time.

Policy (chosen to keep what segments a user's scans explicit):

* The active version is named by ``active.json`` in the store; ``models.default_model_path()`` follows it.
  Without it the shipped default is active. ``revert`` removes the pointer.
* Any listed version, shipped or user, can be activated; it is loaded once first so that a corrupt or
  mismatched file is refused at activation, not at the next segmentation.
* Shipped versions are never deleted or written. The active version cannot be deleted: revert or
  activate another first (deleting it would silently change which model segments the next scan).
* New versions get a fresh name (letters, digits, ``.``, ``_``, ``-``); a name already used by a shipped or
  user model is refused, so a version, once written, never changes.
* Writes are atomic (temporary file + rename); a failed save (unwritable store, disk full) removes what it
  wrote and says so.
* A lock file (``.finetune.lock``: PID, host, start time) admits one fine-tune per store; a lock whose
  process has died on this host is stale and is taken over.
"""
from __future__ import annotations

import errno
import json
import os
import re
import socket
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import files as models
from ..paths import user_model_store
from .files import ModelError, load_model, metadata_path, save_model

LOCK_NAME = ".finetune.lock"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


class StoreError(ValueError):
    """The user model store refuses an operation; the message says why and what to do."""


class StoreBusyError(StoreError):
    """Another fine-tune holds the store's lock."""


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


def list_versions() -> list[ModelVersion]:
    """Shipped then user versions, the active one marked (none marked when no model is installed)."""
    entries = models.list_models()
    try:
        active_path = models.default_model_path().resolve()
    except ModelError:  # no model installed, or a broken pointer: nothing is active
        active_path = None
    return [ModelVersion(e.name, e.source, e.path, active_path is not None and e.path.resolve() == active_path,
                         e.metadata) for e in entries]


def _find(name: str) -> models.ModelEntry:
    matches = [e for e in models.list_models() if e.name == name]
    if not matches:
        known = ", ".join(e.name for e in models.list_models()) or "none"
        raise StoreError(f"no model version named {name!r} (known: {known})")
    return matches[0]  # the same choice as models.resolve_model: shipped first


def activate(name: str) -> ModelVersion:
    """Make ``name`` the version used when none is named."""
    entry = _find(name)
    try:
        load_model(entry.path)  # refuse now what would fail at the next segmentation
    except ModelError as error:
        raise StoreError(f"cannot activate {name!r}: {error}") from None
    store = ensure_writable()
    pointer = {"name": entry.name, "source": entry.source, "sha256": entry.metadata.get("sha256"),
               "activated": _now()}
    _write_atomic(store / models.ACTIVE_POINTER, json.dumps(pointer, indent=2).encode(), store)
    return ModelVersion(entry.name, entry.source, entry.path, True, entry.metadata)


def revert() -> bool:
    """Use the shipped default again. True when a user choice was removed, False when there was none."""
    pointer = user_model_store() / models.ACTIVE_POINTER
    if not pointer.exists():
        return False
    try:
        pointer.unlink()
    except OSError as error:
        raise StoreError(f"cannot remove {pointer} ({error.strerror}); check the folder's permissions") from None
    return True


def delete(name: str) -> Path:
    """Delete the user version ``name`` (both files). Shipped and active versions are refused."""
    users = [e for e in models.list_models() if e.name == name and e.source == "user"]
    if not users:
        if any(e.name == name for e in models.list_models()):
            raise StoreError(f"{name!r} is a shipped model; shipped models are part of the installation and are "
                             "never deleted")
        raise StoreError(f"no user model version named {name!r}")
    entry = users[0]
    try:
        pointer = models.active_pointer()
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
    if name == Path(models.ACTIVE_POINTER).stem:
        raise StoreError(f"model name {name!r} is reserved; choose another")
    for entry in models.list_models():
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
        return save_model(network, path, {**metadata, "created": metadata.get("created") or _now()})
    except OSError as error:
        # save_model renames each file into place whole; if the second failed, the first must go too.
        path.unlink(missing_ok=True)
        metadata_path(path).unlink(missing_ok=True)
        raise StoreError(describe_os_error(error, store)) from None


def _write_atomic(path: Path, data: bytes, store: Path) -> None:
    try:
        models._atomic_write_bytes(path, data)
    except OSError as error:
        raise StoreError(describe_os_error(error, store)) from None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# -- one fine-tune at a time ----------------------------------------------------------------------------
def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_lock(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _create_lock(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` unless it exists (False then). The text is written whole to a
    temporary file and hard-linked into place, so creation is atomic and no one reads a half-written lock;
    where hard links are not supported, exclusive creation is the fall-back."""
    handle, temporary = tempfile.mkstemp(prefix=".tmp-lock-", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        except OSError:
            try:
                descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(descriptor, "w") as out:
                out.write(text)
        return True
    finally:
        Path(temporary).unlink(missing_ok=True)


@contextmanager
def finetune_lock(description: str, store: Path | None = None):
    """Hold the store's fine-tune lock for the ``with`` block; StoreBusyError if a live process holds it."""
    store = ensure_writable(store)
    path = store / LOCK_NAME
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now(), "model": description}
    try:
        for _ in range(2):
            if _create_lock(path, json.dumps(record)):
                break
            holder = _read_lock(path)
            same_host = holder is not None and holder.get("host") == record["host"]
            if holder is None or not same_host or _process_alive(int(holder.get("pid", -1))):
                who = (f"PID {holder.get('pid')} on {holder.get('host')}, model {holder.get('model')!r}, started "
                       f"{holder.get('started')}") if holder else "its lock file is unreadable"
                raise StoreBusyError(f"another fine-tune is running on this model store ({who}); wait for it to "
                                     f"finish or cancel it. If none is running, delete {path}")
            path.unlink(missing_ok=True)  # stale: its process is gone
        else:
            raise StoreBusyError(f"could not take the fine-tune lock {path}; another fine-tune is starting")
    except OSError as error:
        raise StoreError(describe_os_error(error, store)) from None
    try:
        yield path
    finally:
        holder = _read_lock(path)
        if holder is not None and holder.get("pid") == os.getpid() and holder.get("started") == record["started"]:
            path.unlink(missing_ok=True)
