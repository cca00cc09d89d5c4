"""Every output a command was asked for, checked before any work: a refusal after an hour of computing loses the
hour. Each output's format (suffix), its folder (exists, takes a file: proven by writing one), that it is no
folder, device or input, that no two outputs share a path, and that nothing is replaced without ``overwrite``.
Imports neither SimpleITK nor torch, so a refused command answers at once."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .names import InputError, file_suffix

IMAGE_FORMATS = (".nii.gz", ".nii", ".nrrd", ".mha")  # what SimpleITK writes for us, compressed where it can
LABELMAP_FORMATS = IMAGE_FORMATS + (".seg.nrrd",)
TABLE_FORMATS = (".csv",)
DICOM_FORMATS = (".dcm",)


@dataclass(frozen=True)
class Output:
    option: str  # how the user named it: "output", "--volumes", ...
    path: Path
    formats: tuple  # accepted suffixes


def check_outputs(outputs: list[Output], inputs: list[str | os.PathLike] = (), overwrite: bool = False) -> None:
    """Refuse (InputError, naming the option, the path and the fix) any output that could not be written."""
    seen: dict[Path, str] = {}
    taken = {Path(p).resolve() for p in inputs}
    existing = []
    for output in outputs:
        path, resolved = output.path, output.path.resolve()
        suffix = file_suffix(path)
        if path.is_dir():
            raise InputError(f"{output.option} {path} is a folder; give a file name (e.g. "
                             f"{path / ('out' + (output.formats[0] if suffix not in output.formats else suffix))})")
        if suffix not in output.formats:
            raise InputError(f"{output.option} {path}: unsupported format {suffix or '(no suffix)'!r}; use "
                             f"{', '.join(output.formats)}")
        if resolved in taken:
            raise InputError(f"{output.option} {path} is an input; writing it would destroy that input. Choose "
                             "another output path")
        if resolved in seen:
            raise InputError(f"{output.option} and {seen[resolved]} both name {path}; give each output its own path")
        seen[resolved] = output.option
        if path.exists() or path.is_symlink():
            if not path.is_file():
                raise InputError(f"{output.option} {path} exists and is not a regular file (a device or special "
                                 "file); choose another output path")
            existing.append(f"{output.option} {path}")
        _check_folder(output.option, path)
    if existing and not overwrite:
        raise InputError(f"{'; '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; pass --overwrite to "
                         "replace, or choose other output paths")


def _check_folder(option: str, path: Path) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{option} {path}: output folder {folder} does not exist; create it or choose another "
                         "output path")
    try:  # os.access says yes to root and knows nothing of read-only mounts or /proc: writing a file tells
        handle, probe = tempfile.mkstemp(prefix=".tmp-probe-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise InputError(f"{option} {path}: output folder {folder} is not writable ({error.strerror or error}); "
                         "choose another output path") from None
