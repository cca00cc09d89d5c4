"""What a volume file's content says before it is segmented: a truncated or corrupt file, and a label map or mask
given where an MR image belongs.

Both pass every header check and would be segmented without a word: ITK reads the missing part of a truncated
NIfTI (``.nii``/``.nii.gz``) as zeros (half a head, exit 0), and a label map is a valid 3D volume. So the data's
size is checked against the header, and the voxel values are looked at: an MR scan holds hundreds to thousands of
distinct values, a segmentation or mask a few integers.
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

from .names import InputError, file_suffix

MAX_LABEL_VALUES = 64  # a label map holds at most this many distinct integers; an MR scan far more
_SAMPLE_VOXELS = 200_000  # a first look at a sample: an MR image is told apart without sorting every voxel
_ASEG_CORE = {2, 3, 41, 42, 17, 53}  # cerebral WM, cortex, hippocampus, both sides: FreeSurfer's aseg values
_CHUNK = 1 << 22


def check_complete(path: str | os.PathLike) -> None:
    """Refuse a NIfTI or FreeSurfer file whose data is shorter than its header says, or whose compressed stream is
    cut or corrupt. NRRD and MetaImage readers count the bytes themselves (they fail on a short file)."""
    path = Path(path)
    suffix = file_suffix(path)
    if suffix not in (".nii.gz", ".nii", ".mgz", ".mgh") or not path.is_file():
        return
    with open(path, "rb") as handle:  # by content: ITK also reads an uncompressed file named .nii.gz
        compressed = handle.read(2) == b"\x1f\x8b"
    size = _decompressed_size(path) if compressed else path.stat().st_size
    expected = _expected_size(path)
    if expected is not None and size < expected:
        raise InputError(
            f"{path}: the file is truncated: its header describes {expected:,} bytes of header and voxels but it "
            f"holds {size:,}{' once decompressed' if compressed else ''} (an interrupted copy or download?); copy "
            "it again from the source")


def _decompressed_size(path: Path) -> int:
    """Bytes in a gzip file once decompressed, read as a stream; a cut or damaged stream is an InputError."""
    total, stream = 0, zlib.decompressobj(wbits=31)  # 31: a gzip header and trailer (CRC and length checked)
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(_CHUNK), b""):
                while block:
                    if stream.eof:  # zero padding, or another gzip member (concatenated files), as gzip reads them
                        block = block.lstrip(b"\0")
                        if not block:
                            break
                        stream = zlib.decompressobj(wbits=31)
                    total += len(stream.decompress(block))
                    block = stream.unused_data if stream.eof else b""
        total += len(stream.flush())
        if not stream.eof:
            raise EOFError
    except (EOFError, zlib.error, OSError) as error:
        reason = "it ends before the compressed data does" if isinstance(error, EOFError) else str(error)
        raise InputError(f"{path}: the compressed file is truncated or corrupt ({reason}); copy it again from the "
                         "source") from None
    return total


def _expected_size(path: Path) -> int | None:
    """Header + voxel bytes as the header describes them; None if it cannot tell (SimpleITK then reads the file
    and says what is wrong). A NIfTI header is read by SimpleITK (a millisecond; importing nibabel takes 0.1-0.3
    s of every command), a FreeSurfer one by nibabel, which reads those files anyway."""
    if file_suffix(path) in (".nii", ".nii.gz"):
        import SimpleITK as sitk

        try:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            dims = [int(reader.GetMetaData(f"dim[{axis}]")) for axis in range(1, int(reader.GetMetaData("dim[0]")) + 1)]
            voxels = int(np.prod(dims, dtype=np.int64))
            return int(float(reader.GetMetaData("vox_offset"))) + voxels * int(reader.GetMetaData("bitpix")) // 8
        except (RuntimeError, ValueError):  # not a header ITK reads, or fields it does not report
            return None
    import nibabel

    try:
        header = nibabel.load(str(path)).header
        shape = header.get_data_shape()
        return int(header.get_data_offset()) + int(np.prod(shape, dtype=np.int64)) * header.get_data_dtype().itemsize
    except Exception:  # nibabel rejects some headers that ITK accepts: no opinion then
        return None


def label_map_reason(image, name: str = "input") -> str | None:
    """Why ``image`` (SimpleITK) looks like a segmentation or mask rather than an MR scan, or None: all its voxels
    are integers and there are at most ``MAX_LABEL_VALUES`` distinct values."""
    import SimpleITK as sitk

    array = sitk.GetArrayViewFromImage(image)
    sample = array.ravel()[:: max(1, array.size // _SAMPLE_VOXELS)]
    if _distinct_integers(sample) is None:
        return None
    values = _distinct_integers(array)
    if values is None:
        return None
    shown = ", ".join(str(int(v)) for v in values[:12]) + (", ..." if len(values) > 12 else "")
    if len(values) <= 2:
        kind = "a binary mask"
    elif _ASEG_CORE <= {int(v) for v in values}:
        kind = "a segmentation with FreeSurfer aseg label values"
    else:
        kind = "a segmentation (label map)"
    return (f"{name} looks like {kind}, not an MR image: its voxels hold only {len(values)} distinct integer values "
            f"({shown}). Give the MR scan itself, or pass --force to segment this volume anyway")


def _distinct_integers(array: np.ndarray) -> np.ndarray | None:
    """The distinct values of ``array`` when they are all integers and few enough for a label map, else None."""
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            return None
    elif array.dtype.kind not in "iub":
        return None
    values = np.unique(array)
    return values if len(values) <= MAX_LABEL_VALUES else None


def refuse_label_map(image, name: str = "input") -> None:
    reason = label_map_reason(image, name)
    if reason:
        raise InputError(reason)
