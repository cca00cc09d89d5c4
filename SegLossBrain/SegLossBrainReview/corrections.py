"""Save correction: the edited segmentation and its scan -> one fine-tuning pair in the site's pairs folder.

The pair is what the Slicer fine-tuning panel writes for ``seglossbrain finetune`` (``SegLossBrainSlicer.
finetune_pairs``: the same checks of the segments, the same export onto exactly the scan's voxels, the same
labelmap writer), saved as ``CASE_image.nrrd`` + ``CASE_labels.nrrd``. Each file is written to a temporary name
beside it and renamed, so the folder never holds half a file; the labels go last, so a pair is listed (both files
present) only once it is whole. Saving a case again replaces that case's previous correction (the newest is the
one to learn from); the labels the engine wrote (a ``batch`` or ``segment`` output) are never written to.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIX, LABELS_SUFFIX = "_image.nrrd", "_labels.nrrd"


class CorrectionError(ValueError):
    """The correction cannot be saved; the message says why and what to do."""


@dataclass
class SavedPair:
    image: Path
    labels: Path
    structures: int
    notes: list[str]


def pair_stem(case_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", case_id).strip("._") or "case"


def pair_paths(folder: Path, case_id: str) -> tuple[Path, Path]:
    stem = pair_stem(case_id)
    return Path(folder) / f"{stem}{IMAGE_SUFFIX}", Path(folder) / f"{stem}{LABELS_SUFFIX}"


def list_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """The whole pairs in ``folder`` (image and labels both present), by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pairs = []
    for labels in sorted(folder.glob(f"*{LABELS_SUFFIX}")):
        image = labels.with_name(labels.name[: -len(LABELS_SUFFIX)] + IMAGE_SUFFIX)
        if image.is_file() and not labels.name.startswith("."):
            pairs.append((image, labels))
    return pairs


def save_correction(volume, segmentation, case, folder: Path) -> SavedPair:
    """Check the pair as the fine-tuning panel does and write it atomically into ``folder`` (created if needed)."""
    from SegLossBrainLib.imageio.atomic import atomic_path
    from SegLossBrainLib.labels import load_label_table
    from SegLossBrainSlicer.finetune_pairs import pair_labels, write_labels
    from SegLossBrainSlicer.input_checks import InputProblem
    from SegLossBrainSlicer.volume_files import write_volume

    folder = Path(folder).expanduser()
    image_path, labels_path = pair_paths(folder, case.case_id)
    originals = {Path(p).expanduser().resolve() for p in (case.image, case.labels) if p}
    if {image_path.resolve(), labels_path.resolve()} & originals:
        raise CorrectionError(f"the pairs folder {folder} would overwrite this case's own files; choose another "
                              "--pairs-dir")
    try:
        labels, present, notes = pair_labels(volume, segmentation, load_label_table())
    except InputProblem as problem:
        raise CorrectionError(str(problem)) from None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(image_path) as temporary:
            write_volume(volume, temporary)
        with atomic_path(labels_path) as temporary:
            write_labels(labels, volume, temporary)
    except OSError as error:
        raise CorrectionError(f"could not write the pair into {folder} ({error}); check the folder's permissions "
                              "and free space, or choose another --pairs-dir") from None
    return SavedPair(image_path, labels_path, len(present), notes)
