"""Write a labelmap as a DICOM Segmentation object (highdicom) that references the DICOM series it was made from.

One segment per structure of the output (19, or the left/right ones with ``hemispheres``), each with its SNOMED CT
category and type from the label table, laterality as the type modifier (SCT Left/Right), its colour (CIELab) and
the algorithm's name and version. Frames follow the source series slice by slice (BINARY segmentation, empty
frames omitted), so a viewer overlays it on the series it references. dciodvfy validates it and dcmqi (Slicer's
QuantitativeReporting) reads it back voxel for voxel (Testing/imageio/test_dicom_seg_tools.py). The labelmap must
lie on the source series' own grid.

Real series are anonymised: de-identification empties or removes the patient's birth date and sex, the accession
number, the study ID, the referring physician, private tags. The SEG copies the Patient and General Study modules
from its source, where those are Type 2 (present, may be empty), so an attribute the source lacks is written
empty, as the standard allows; a value that is not valid for its type (a sex of "Unknown", a date that is no
date) is written empty too. What a SEG cannot do without (Type 1: the study, series and instance UIDs, the frame
of reference, the slice geometry) is checked before any work. The libraries' many warnings about such series
are collected into one note instead of flooding the terminal.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..labels import OutputSegment, load_label_table, output_segments
from .atomic import atomic_path
from .volumes import InputError, dicom_series_files

ALGORITHM_NAME = "SegLossBrain"
# Type 2 attributes of the Patient and General Study modules that highdicom copies from the source series.
TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                "ReferringPhysicianName", "StudyID", "AccessionNumber")
# Type 1 attributes of the source that a SEG referencing it needs (no valid SEG without them).
TYPE1_NEEDED = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "FrameOfReferenceUID",
                "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
_PATIENT_SEX = ("M", "F", "O")


def check_dicom_seg_request(output_spacing=None) -> None:
    """What a DICOM SEG output needs, checked before any work: highdicom, and the labels on the series' grid."""
    try:
        import highdicom  # noqa: F401  (checked now, not after the segmentation)
    except ImportError:
        raise InputError("--dicom-seg needs the highdicom package: pip install highdicom") from None
    if output_spacing is not None:
        raise InputError("--dicom-seg writes the labels on the DICOM series' own grid; it cannot be combined "
                         "with --output-spacing (run twice, or drop one)")


def check_series_input(path: str | os.PathLike) -> None:
    """A DICOM SEG references a source series: the input must be a DICOM series folder whose files carry what a
    SEG refers to (checked on its first file, before any work)."""
    if not Path(path).is_dir():
        raise InputError(f"--dicom-seg needs a DICOM series folder as input; {path} is not a folder. Give the "
                         "folder of the DICOM series, or segment it without --dicom-seg")
    import pydicom

    files = dicom_series_files(path)
    with _quiet([]):
        first = pydicom.dcmread(files[0], stop_before_pixels=True)
    missing = [name for name in TYPE1_NEEDED if not str(first.get(name, "") or "").strip()]
    if missing:
        raise InputError(f"{path}: the DICOM series lacks {', '.join(missing)}, which a DICOM SEG must refer to (an "
                         "anonymiser may have removed them); segment it without --dicom-seg")
    if int(first.get("NumberOfFrames", 1) or 1) > 1:
        raise InputError(f"{path}: a multi-frame (enhanced) DICOM series; --dicom-seg supports single-frame series "
                         "only. Segment it without --dicom-seg")


def _code(entry):
    import highdicom

    return highdicom.sr.CodedConcept(value=entry.value, scheme_designator=entry.scheme, meaning=entry.meaning)


def _algorithm_version(version: str, model: dict) -> str:
    """SegLossBrain's version and the model's name (LO: at most 64 characters)."""
    text = f"{version or 'unknown'} model {model['name']}" if model.get("name") else (version or "unknown")
    return text[:63]


def _software_versions(version: str, model: dict) -> list[str] | str:
    if not model.get("name"):
        return version or "unknown"
    # LO values of at most 64 characters (readers count a padding space): the full sha256 is in each segment's
    # AlgorithmParameters
    return [version or "unknown", f"model {model['name']}"[:63], f"sha256 {str(model.get('sha256', ''))[:16]}"]


def segment_description(number: int, segment: OutputSegment, version: str, model: dict | None = None):
    import highdicom
    from pydicom.sr.codedict import codes

    model = model or {}
    parameters = {"model": model["name"], "model_sha256": model.get("sha256", "")} if model.get("name") else None

    terminology = segment.terminology
    description = highdicom.seg.SegmentDescription(
        segment_number=number,
        segment_label=segment.name,
        segmented_property_category=_code(terminology["Category"]),
        segmented_property_type=_code(terminology["Type"]),
        algorithm_type=highdicom.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=highdicom.AlgorithmIdentificationSequence(
            name=ALGORITHM_NAME, family=codes.cid7162.ArtificialIntelligence,
            version=_algorithm_version(version, model), parameters=parameters),
        tracking_id=segment.name,
        tracking_uid=highdicom.UID(),
        display_color=highdicom.color.CIELabColor.from_rgb(*segment.color),
    )
    if terminology["TypeModifier"]:  # laterality (Left / Right / Right and left)
        # PS3.3 C.8.20.2: the modifier is nested in the type's code item, not beside it, which is where dciodvfy,
        # dcmqi and so Slicer's QuantitativeReporting look for it.
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            _code(terminology["TypeModifier"])]
    return description


def with_type2_present(dataset):
    """``dataset`` with every Type 2 attribute that the SEG copies present: absent or invalid ones empty."""
    from pydicom.valuerep import DA, TM

    for name in TYPE2_COPIED:
        value = dataset.get(name)
        if value is None:
            setattr(dataset, name, "")
    if str(dataset.PatientSex).strip().upper() not in _PATIENT_SEX:
        dataset.PatientSex = ""
    for name, kind in (("PatientBirthDate", DA), ("StudyDate", DA), ("StudyTime", TM)):
        text = str(dataset.get(name) or "").strip()
        try:
            if text and kind(text) is None:
                raise ValueError(text)
        except ValueError:
            setattr(dataset, name, "")
    return dataset


class _quiet:
    """Collects pydicom's and highdicom's warnings (``warnings`` and ``logging``) into ``notes``."""

    def __init__(self, notes: list):
        self.notes = notes
        self.handler = logging.Handler()
        self.handler.emit = lambda record: self.notes.append(f"{record.name}: {record.getMessage()}")

    def __enter__(self):
        self.caught = warnings.catch_warnings(record=True)
        self.records = self.caught.__enter__()
        warnings.simplefilter("always")
        self.loggers = [logging.getLogger(name) for name in ("highdicom", "pydicom")]
        self.saved = [(logger.propagate, logger.level) for logger in self.loggers]
        for logger in self.loggers:
            logger.addHandler(self.handler)
            logger.propagate = False  # not to the terminal as well
            logger.setLevel(logging.WARNING)
        return self

    def __exit__(self, *exc):
        for logger, (propagate, level) in zip(self.loggers, self.saved):
            logger.removeHandler(self.handler)
            logger.propagate, logger.level = propagate, level
        self.caught.__exit__(*exc)
        self.notes += [f"{w.category.__name__}: {w.message}" for w in self.records]
        return False


def summarise_notes(notes: list) -> str | None:
    """One line for the library warnings of a SEG: how many, and the distinct first few."""
    distinct = list(dict.fromkeys(" ".join(str(n).split()) for n in notes))
    if not distinct:
        return None
    shown = "; ".join(text[:120] for text in distinct[:3])
    return f"DICOM SEG: {len(notes)} warning(s) from pydicom/highdicom about the source series ({shown}" \
           f"{'; ...' if len(distinct) > 3 else ''})"


def write_dicom_seg(labels: sitk.Image, series_folder: str | os.PathLike, path: str | os.PathLike,
                    hemispheres: bool = False, version: str = "", model: dict | None = None,
                    notes: list | None = None) -> Path:
    """Write ``labels`` (values in table order, or aseg values with ``hemispheres``; on the grid of the series in
    ``series_folder``) as a DICOM SEG to ``path``, atomically. ``model`` (``name``, ``sha256``) goes into the
    algorithm's version and parameters; the libraries' warnings go to ``notes``."""
    notes = [] if notes is None else notes
    with _quiet(notes):
        return _write(labels, series_folder, path, hemispheres, version, model or {})


def _write(labels, series_folder, path, hemispheres: bool, version: str, model: dict) -> Path:
    import highdicom
    import pydicom

    files = dicom_series_files(series_folder)
    array = sitk.GetArrayViewFromImage(labels)
    if array.shape[0] != len(files):
        raise InputError(f"the labelmap has {array.shape[0]} slices but the DICOM series {len(files)}; a DICOM SEG "
                         "needs the labels on the series' own grid (no --output-spacing)")
    sources = [with_type2_present(pydicom.dcmread(f)) for f in files]
    segments = output_segments(load_label_table(), hemispheres)
    # Segment numbers run 1..N; the labelmap's values are table indices or aseg values.
    lookup = np.zeros(max(256, int(array.max()) + 1), dtype=np.uint16)
    for number, segment in enumerate(segments, start=1):
        lookup[segment.value] = number
    pixels = lookup[array]
    seg = highdicom.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,
        segmentation_type=highdicom.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment_description(n, s, version, model) for n, s in enumerate(segments, start=1)],
        series_instance_uid=highdicom.UID(),
        series_number=max(int(getattr(sources[0], "SeriesNumber", 0) or 0), 0) + 1000,
        sop_instance_uid=highdicom.UID(),
        instance_number=1,
        manufacturer=ALGORITHM_NAME,
        manufacturer_model_name=ALGORITHM_NAME,
        software_versions=_software_versions(version, model),
        device_serial_number="none",
        content_description="Brain structures (research use, not for clinical decisions)",
        series_description=f"{ALGORITHM_NAME} {'left/right ' if hemispheres else ''}segmentation",
    )
    with atomic_path(path) as temporary:
        seg.save_as(temporary)
    return Path(path)
