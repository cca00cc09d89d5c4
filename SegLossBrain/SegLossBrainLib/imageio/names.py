"""The bad-input error and file-type suffixes, apart from the readers: what the command line needs to refuse a
bad request at once, without loading SimpleITK or torch."""
from __future__ import annotations

from pathlib import Path

LABELMAP_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".mgz", ".mgh")


class InputError(ValueError):
    """The input can't be used; the message names the problem and what to do instead."""


def file_suffix(path: Path) -> str:
    """The file type suffix, double ones (".nii.gz", ".seg.nrrd") included, lower case."""
    name = Path(path).name.lower()
    for suffix in LABELMAP_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return Path(path).suffix.lower()
