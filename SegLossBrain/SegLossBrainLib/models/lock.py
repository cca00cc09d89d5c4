"""One fine-tune at a time per user model store.

A lock file (``.finetune.lock``: PID, host, start time) admits one fine-tune per store; a lock whose process has
died on this host is stale and is taken over.
"""
from __future__ import annotations

import json
import os
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .store import StoreError, describe_os_error, ensure_writable, timestamp

LOCK_NAME = ".finetune.lock"


class StoreBusyError(StoreError):
    """Another fine-tune holds the store's lock."""


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
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": timestamp(), "model": description}
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
