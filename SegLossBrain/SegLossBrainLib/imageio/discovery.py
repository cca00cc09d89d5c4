"""Which volumes a cohort command segments, each under a unique case id.

An input is a volume file, a folder (searched recursively: every volume file, and every folder holding DICOM
files as one series case), or a ``.txt``/``.csv`` list of such paths (relative paths are read from the list's
folder). Every problem that can be seen before any work starts is an ``InputError`` here: a missing input, a
folder with nothing to segment, a list naming missing files, two inputs that would get the same case id.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from .volumes import InputError, file_suffix

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".mgz", ".mgh")  # .seg.nrrd is a segmentation
LIST_SUFFIXES = (".txt", ".csv")
_CASE_ID_COLUMNS = ("case_id", "case", "id", "subject")
_PATH_COLUMNS = ("path", "input", "image", "file")


@dataclass(frozen=True)
class Case:
    case_id: str  # unique in the cohort; names the case's output files
    path: Path  # absolute: a volume file or a DICOM series folder


def discover_cases(inputs: Iterable[str | os.PathLike], skip: Callable[[Path], bool] | None = None) -> list[Case]:
    """The cases named by ``inputs``, in a fixed order (inputs in the order given, folders sorted), each path
    once. ``skip`` leaves out files and DICOM folders that a folder search finds (e.g. a cohort's own earlier
    outputs)."""
    skip = skip or (lambda path: False)
    found: list[tuple[Path, str | None]] = []  # (path, case id given by a list or None)
    for item in inputs:
        path = Path(item).expanduser()
        if not path.exists():
            raise InputError(f"{path}: no such file or folder; give volume files, DICOM series folders, folders to "
                             "search or .txt/.csv lists of paths")
        if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            found += _read_list(path, skip)
        elif path.is_dir():
            found += [(p, None) for p in _search(path, skip)]
        else:
            found.append((path, None))
    unique: dict[Path, str | None] = {}
    for path, given_id in found:
        unique.setdefault(path.resolve(), given_id)
    return _with_case_ids(list(unique.items()))


def _search(folder: Path, skip: Callable[[Path], bool]) -> list[Path]:
    cases = []
    for directory, subfolders, files in os.walk(folder):
        subfolders.sort()
        subfolders[:] = [s for s in subfolders if not s.startswith(".")]  # hidden: temporary and partial outputs
        here = Path(directory)
        volumes = [here / f for f in sorted(files) if not f.startswith(".") and file_suffix(Path(f)) in VOLUME_SUFFIXES]
        cases += [p for p in volumes if not skip(p)]
        others = [here / f for f in sorted(files) if not f.startswith(".") and here / f not in volumes]
        if not skip(here) and any(_is_dicom(p) for p in others[:50]):
            cases.append(here)
    if not cases:
        raise InputError(f"folder {folder} holds no volume ({', '.join(VOLUME_SUFFIXES)}) and no DICOM series, "
                         "searched recursively; give another folder or the files themselves")
    return cases


def _is_dicom(path: Path) -> bool:
    """DICOM Part 10 files carry 'DICM' after a 128-byte preamble, whatever their name."""
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _read_list(list_path: Path, skip: Callable[[Path], bool]) -> list[tuple[Path, str | None]]:
    """Rows of a ``.txt`` (one path a line; blank lines and ``#`` comments ignored) or ``.csv`` list (the column
    named path/input/image/file, else the first; an optional case_id column names the cases)."""
    try:
        text = list_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"list {list_path} cannot be read ({error}); give a UTF-8 text file of paths") from None
    entries: list[tuple[int, str, str | None]] = []  # (line, path, case id)
    if list_path.suffix.lower() == ".csv":
        rows = list(csv.reader(text.splitlines()))
        header = [c.strip().lower() for c in rows[0]] if rows else []
        path_column = next((header.index(c) for c in _PATH_COLUMNS if c in header), None)
        id_column = next((header.index(c) for c in _CASE_ID_COLUMNS if c in header), None)
        if path_column is None:  # no header naming the path column: every row is data, the first column the path
            path_column, id_column, start = 0, None, 0
        else:
            start = 1
        for number, row in enumerate(rows[start:], start=start + 1):
            if len(row) > path_column and row[path_column].strip():
                case_id = row[id_column].strip() if id_column is not None and len(row) > id_column else None
                entries.append((number, row[path_column].strip(), case_id or None))
    else:
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip() and not line.strip().startswith("#"):
                entries.append((number, line.strip(), None))
    if not entries:
        raise InputError(f"list {list_path} names no paths; write one volume file or folder per line")
    resolved = [((list_path.parent / Path(p).expanduser()), number, case_id) for number, p, case_id in entries]
    missing = [f"{path} (line {number})" for path, number, _ in resolved if not path.exists()]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise InputError(f"list {list_path} names {len(missing)} missing file(s): {', '.join(missing[:5])}{more}; "
                         "fix the paths (relative ones are read from the list's folder) or remove those lines")
    cases: list[tuple[Path, str | None]] = []
    for path, _, case_id in resolved:
        if path.is_dir():
            found = _search(path, skip)
            # A listed DICOM series folder is one case: the list's case id is its name (several found under
            # one listed folder: the id names them all, each with its own name after it).
            cases += [(p, (case_id if len(found) == 1 else f"{case_id}_{_stem(p)}") if case_id else None)
                      for p in found]
        else:
            cases.append((path, case_id))
    return cases


def _safe(text: str) -> str:
    """A case id usable as a file name on every OS."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "case"


def _stem(path: Path) -> str:
    suffix = file_suffix(path)
    return path.name[: -len(suffix)] if suffix and path.name.lower().endswith(suffix) else path.name


def _with_case_ids(paths: list[tuple[Path, str | None]]) -> list[Case]:
    """Case ids from the file (or DICOM folder) names; where two collide, parent folder names are prefixed until
    they differ (``sub-01/T1.nii.gz`` -> ``sub-01_T1``). Ids that stay equal are an error: two outputs would
    have one name."""
    parts = [[_safe(given)] if given else [_safe(_stem(path))] + [_safe(p) for p in reversed(path.parent.parts)
                                                                    if p not in ("/", "\\")] for path, given in paths]
    depth = [1] * len(paths)
    while True:
        ids = ["_".join(reversed(p[:d])) for p, d in zip(parts, depth)]
        groups: dict[str, list[int]] = {}
        for index, case_id in enumerate(ids):
            groups.setdefault(case_id.lower(), []).append(index)  # case-insensitive file systems
        clashes = [g for g in groups.values() if len(g) > 1]
        grown = False
        for group in clashes:
            for index in group:
                if depth[index] < len(parts[index]):
                    depth[index] += 1
                    grown = True
        if not clashes:
            return [Case(case_id, path) for case_id, (path, _) in zip(ids, paths)]
        if not grown:
            group = clashes[0]
            names = " and ".join(str(paths[i][0]) for i in group[:3])
            raise InputError(f"{names} would be written under the same case id {parts[group[0]][0]!r}; rename one, "
                             "list only one, or give case ids in a .csv list (column case_id)")
