"""Reading, checking and writing volumes. Every bad-input error of the engine is raised here.

SimpleITK reads NIfTI, NRRD, MHA and DICOM series; nibabel reads FreeSurfer ``.mgz``/``.mgh``. Images are kept
as ``SimpleITK.Image`` in ITK's LPS physical space throughout the engine; nibabel's RAS affine is converted on
the way in (flip the first two axes).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..preprocessing.output_grid import output_spacing_problem
from .atomic import OutputError, atomic_path
from .names import LABELMAP_SUFFIXES, InputError, file_suffix  # noqa: F401  (imported from here too)

MAX_SPACING_MM = 20.0
MIN_SPACING_MM = 1e-3
MIN_BRAIN_EXTENT_MM = 60.0  # smallest field of view (every axis) that can hold an adult brain's core
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read a volume file or a DICOM series folder; errors name the file and the problem."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    try:
        if path.is_dir():
            return _read_dicom_folder(path)
        from .content import check_complete  # (content.py imports this file)

        check_complete(path)  # ITK would read a truncated NIfTI's missing part as zeros
        if file_suffix(path) in (".mgz", ".mgh"):
            return _read_freesurfer(path)
        return sitk.ReadImage(str(path))
    except InputError:
        raise
    except Exception as error:  # SimpleITK/nibabel raise bare RuntimeErrors with long ITK traces
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise InputError(
            f"{path}: cannot read this file as a volume ({first_line}). Supported: NIfTI (.nii, .nii.gz), "
            "NRRD (.nrrd), MetaImage (.mha/.mhd), FreeSurfer (.mgz/.mgh) or a folder holding one DICOM series."
        ) from None


def dicom_series_files(folder: str | os.PathLike) -> list[str]:
    """The files of the series ``read_image`` reads from a DICOM folder, in its slice order (a DICOM SEG refers
    to them frame by frame)."""
    folder = Path(folder)
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) if folder.is_dir() else ()
    if not series:
        raise InputError(f"{folder}: folder holds no DICOM series; give a volume file or a DICOM series folder")
    # Several series: take the one with most slices (the 3D acquisition rather than localisers).
    return list(max((sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), s) for s in series), key=len))


def _read_dicom_folder(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(dicom_series_files(folder))
    return reader.Execute()


def _read_freesurfer(path: Path) -> sitk.Image:
    import nibabel

    volume = nibabel.load(str(path))
    data = np.asarray(volume.dataobj)
    data = data.astype(data.dtype.newbyteorder("="), copy=False)  # MGH stores big-endian; ITK wants native
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{path}: FreeSurfer volume has shape {data.shape}; a 3D volume is needed")
    affine = volume.affine
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction = _RAS_TO_LPS @ (affine[:3, :3] / spacing)
    origin = _RAS_TO_LPS @ affine[:3, 3]
    # nibabel indexes [i, j, k]; SimpleITK arrays are [k, j, i].
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data, (2, 1, 0))))
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in direction.flatten()])
    image.SetOrigin([float(v) for v in origin])
    return image


def check_image(image: sitk.Image, name: str = "input") -> None:
    """Refuse what can't be a 3D brain MR volume, naming the problem and the fix."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{name} has {image.GetNumberOfComponentsPerPixel()} components per voxel (RGB or vector image); "
            "give a single-channel (scalar) MR volume"
        )
    if image.GetDimension() == 4:
        raise InputError(
            f"{name} is 4D (size {image.GetSize()}): a time series or multi-volume file; extract one 3D volume first"
        )
    if image.GetDimension() != 3:
        raise InputError(f"{name} is {image.GetDimension()}D (size {image.GetSize()}); a 3D volume is needed")
    size = image.GetSize()
    if min(size) < 2:
        raise InputError(f"{name} has size {size}: a single slice is 2D; a 3D volume with many slices is needed")
    spacing = image.GetSpacing()
    if min(spacing) < MIN_SPACING_MM or not np.all(np.isfinite(spacing)):
        raise InputError(f"{name} has zero or invalid voxel spacing {spacing}; fix the file's header")
    if max(spacing) > MAX_SPACING_MM:
        raise InputError(
            f"{name} has voxel spacing {tuple(round(s, 3) for s in spacing)} mm, above {MAX_SPACING_MM:g} mm: "
            "the header is probably wrong (spacing in cm or a missing value); fix the spacing"
        )
    extent = [n * s for n, s in zip(size, spacing)]
    if min(extent) < MIN_BRAIN_EXTENT_MM:
        raise InputError(
            f"{name} covers only {tuple(round(e) for e in extent)} mm, too small to hold a brain "
            f"(at least {MIN_BRAIN_EXTENT_MM:g} mm along every axis is needed)"
        )
    array = sitk.GetArrayViewFromImage(image)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise InputError(f"{name} has {bad} NaN or infinite voxels; repair or mask them (e.g. set them to 0) first")
    low, high = array.min(), array.max()
    if low == high:
        raise InputError(f"{name} is empty or constant (every voxel is {low}); it holds no image")


def check_output_spacing(image: sitk.Image, spacing: float) -> None:
    """Refuse an output grid spacing that is not a sensible isotropic voxel size for ``image``'s field of view."""
    problem = output_spacing_problem(spacing, image.GetSize(), image.GetSpacing())
    if problem:
        raise InputError(problem)


def write_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True, hemispheres: bool = False,
                header: dict | None = None) -> Path:
    """Write atomically: to a temporary file beside the target, then rename; nothing half-written remains.
    ``hemispheres``: a ``.seg.nrrd`` labelmap holds FreeSurfer aseg values with left/right segments.
    ``header``: extra key-value fields (e.g. the model that made it) where the format keeps them (NRRD, MHA).
    A failure raises ``OutputError`` naming ``path`` (never the temporary file)."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise InputError(f"output folder {directory} does not exist; create it or choose another output path")
    if not os.access(directory, os.W_OK):
        raise InputError(f"output folder {directory} is not writable; choose another output path")
    suffix = file_suffix(path)
    if suffix not in (".nii.gz", ".nii", ".nrrd", ".seg.nrrd", ".mha"):
        raise InputError(f"{path}: unsupported output format {suffix!r}; use .nii.gz, .nii, .nrrd, .seg.nrrd or .mha")
    if suffix == ".seg.nrrd":
        from .segnrrd import with_segment_metadata

        image = with_segment_metadata(image, hemispheres)
    if header and suffix in (".nrrd", ".seg.nrrd", ".mha"):
        image = image if suffix == ".seg.nrrd" else sitk.Image(image)  # a copy: the caller's image keeps its fields
        for key, value in header.items():
            image.SetMetaData(key, str(value))
    with atomic_path(path) as temporary:
        try:
            sitk.WriteImage(image, str(temporary), useCompression=compress)
        except RuntimeError as error:  # ITK's text names the temporary file; the user knows only ``path``
            lines = str(error).strip().splitlines() or [type(error).__name__]
            reason = lines[-1].replace(str(temporary), str(path)).strip()
            raise OutputError(f"{path}: cannot be written ({reason})") from None
    return path


def same_grid(a: sitk.Image, b: sitk.Image, tolerance: float = 1e-4) -> bool:
    """True when two images share size, spacing, origin and direction (to ``tolerance``)."""
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tolerance)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tolerance * 10)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=tolerance)
    )
