"""Bad input is refused before anything starts: a clear sentence (the problem and the fix), exit 2, nothing written.

What is checked: the scan (missing, not an image, 2D/4D/constant... through the engine's own reader and checks),
the labels (readable, on exactly the scan's voxel grid, values in the 19-structure order or FreeSurfer aseg), a
results folder (a ``batch`` table with at least one case to show), the port (free on that address) and the pairs
folder (inside a writable folder). Plain Python: no Slicer, no trame.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cases import Case, case_id_of, is_results_folder, results_folder_cases

FORMATS = "NIfTI (.nii/.nii.gz), NRRD, MetaImage, FreeSurfer .mgz or a DICOM series folder"


class ReviewInputError(ValueError):
    """Bad input for ``seglossbrain review``; the message says what and how to fix it."""


@dataclass
class CaseData:
    """A case read and checked: the image and its labels as the table's indices (k, j, i), or None."""

    image: object  # SimpleITK image
    labels: np.ndarray | None
    hemispheres: bool  # the labels hold FreeSurfer aseg values with left/right (``--hemispheres`` output)
    sided: np.ndarray | None = None  # those aseg values, when hemispheres
    confidence: np.ndarray | None = None  # per-voxel confidence (k, j, i), when the page segmented the scan


def read_scan(path: Path):
    from SegLossBrainLib.imageio.volumes import InputError, check_image, read_image

    if not Path(path).exists():
        raise ReviewInputError(f"{path} does not exist: give a brain MRI ({FORMATS}) or a 'seglossbrain batch' "
                               "results folder")
    try:
        image = read_image(path)
        check_image(image, name=str(path))
    except InputError as error:
        raise ReviewInputError(f"{error}") from None
    return image


def read_labels(path: Path, image) -> tuple[np.ndarray, bool, np.ndarray | None]:
    """(index labels, hemispheres, aseg values or None) of a labelmap made for ``image``."""
    import SimpleITK as sitk

    from SegLossBrainLib.imageio.volumes import InputError, read_image, same_grid
    from SegLossBrainLib.labels import LabelError, load_label_table, output_segments

    if not Path(path).exists():
        raise ReviewInputError(f"labels {path} do not exist: give the labelmap made for this scan, or leave out "
                               "--labels to segment the scan on opening")
    try:
        labels = read_image(path)
    except InputError as error:
        raise ReviewInputError(f"labels: {error}") from None
    if labels.GetDimension() != 3 or labels.GetNumberOfComponentsPerPixel() != 1 or not same_grid(image, labels):
        raise ReviewInputError(
            f"labels {path} lie on another voxel grid (size {'x'.join(map(str, labels.GetSize()))}, spacing "
            f"{'x'.join(f'{s:.3g}' for s in labels.GetSpacing())} mm) than the scan (size "
            f"{'x'.join(map(str, image.GetSize()))}, spacing {'x'.join(f'{s:.3g}' for s in image.GetSpacing())} "
            "mm, or another origin/direction): give the labels made for this scan (a 'segment' or 'batch' output "
            "without --output-spacing), or leave out --labels to segment it")
    values = sitk.GetArrayFromImage(labels)
    table = load_label_table()
    try:
        index, convention = table.to_index_labels(values)
    except LabelError as error:
        raise ReviewInputError(f"labels {path}: {error}") from None
    sides = {s.value for s in output_segments(table, hemispheres=True)} | {0}
    hemispheres = convention == "freesurfer" and set(np.unique(values).tolist()) <= sides
    return index, hemispheres, (values.astype(np.int32) if hemispheres else None)


def read_case(case: Case) -> CaseData:
    image = read_scan(case.image)
    if case.labels is None:
        return CaseData(image, None, False)
    index, hemispheres, sided = read_labels(case.labels, image)
    return CaseData(image, index, hemispheres, sided)


def cases_for(target: Path, labels: Path | None) -> tuple[list[Case], str]:
    """(cases, kind) for a scan or a results folder; ReviewInputError when there is nothing to show."""
    target = Path(target).expanduser()
    if not target.exists():
        raise ReviewInputError(f"{target} does not exist: give a brain MRI ({FORMATS}) or a 'seglossbrain batch' "
                               "results folder")
    if is_results_folder(target):
        if labels is not None:
            raise ReviewInputError("--labels goes with one scan; a results folder names each case's labels itself")
        cases = results_folder_cases(target)
        if not any(c.status == "ok" for c in cases):
            raise ReviewInputError(f"{target}: its volumes table has no case segmented without error; run "
                                   "'seglossbrain batch' into it first, or give one scan")
        return cases, "folder"
    return [Case(case_id=case_id_of(target), image=target, labels=Path(labels).expanduser() if labels else None)], \
        "scan"


def check_host(host: str) -> bool:
    """True when ``host`` is a loopback address (only this machine can connect)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise ReviewInputError(f"--host {host} is not an IP address; give 127.0.0.1 (default, this machine only) "
                               "or the address of one of this machine's network interfaces") from None


def check_port(host: str, port: int) -> None:
    """Refuse a port that another program holds (or that this user may not open), before any work."""
    if not 0 <= port <= 65535:
        raise ReviewInputError(f"--port {port} is not a port number; give 1024-65535, or 0 for a free one")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise ReviewInputError(f"port {port} on {host} is in use by another program: choose another with "
                                       "--port (or --port 0 for any free port)") from None
            raise ReviewInputError(f"cannot listen on {host}:{port} ({error.strerror}); choose another --port or "
                                   "--host") from None


def check_pairs_folder(folder: Path) -> Path:
    """The pairs folder, or its nearest existing parent, must be a writable folder (nothing is created here)."""
    folder = Path(folder).expanduser()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise ReviewInputError(f"pairs folder {folder}: {existing} is not a writable folder; choose another with "
                               "--pairs-dir or $SEGLOSSBRAIN_PAIRS")
    return folder
