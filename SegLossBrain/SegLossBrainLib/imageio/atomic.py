"""Writing a file whole or not at all: the one way the engine writes its outputs, checkpoints, models and reports.

The content goes to a temporary file in the target's folder (the same file system, so the rename is atomic), which
then replaces the target. On any failure (full disk, Ctrl-C, a writer's error) the temporary file is removed and
the target is left as it was: a reader never sees a half-written file. The temporary name ends with the target's
name, so writers that pick the format from the suffix (SimpleITK, matplotlib) write the right one.
"""
from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


class OutputError(OSError):
    """An output file could not be written (after the work was done); the message names the user's path."""


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write in the ``with`` block; it replaces ``path`` when the block ends
    without error and is removed otherwise. An OSError about the temporary file is raised about ``path`` (same
    errno and type): the temporary name means nothing to whoever reads the message."""
    path = Path(path)
    temporary = path.with_name(f".tmp-{secrets.token_hex(4)}-{path.name}")
    try:
        yield temporary
        os.replace(temporary, path)
    except OSError as error:
        _remove(temporary)
        if error.filename is not None and Path(error.filename) == temporary and error.errno is not None:
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise
    except BaseException:
        _remove(temporary)
        raise


def _remove(temporary: Path) -> None:
    try:
        temporary.unlink(missing_ok=True)
    except OSError:  # e.g. the folder is not writable: there is nothing to remove either
        pass


@contextmanager
def open_atomic(path: str | os.PathLike, mode: str = "w", **options) -> Iterator[IO]:
    """``open(path, mode, **options)``, atomically: the file appears at ``path`` once the block ends without error."""
    with atomic_path(path) as temporary, open(temporary, mode, **options) as handle:
        yield handle


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with open_atomic(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with open_atomic(path, "w") as handle:
        handle.write(text)
    return Path(path)
