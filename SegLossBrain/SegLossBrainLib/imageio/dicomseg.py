"""Write a labelmap as a DICOM Segmentation object (highdicom) that references the DICOM series it was made from.

One segment per structure of the output (19, or the left/right ones with ``hemispheres``), each with its SNOMED CT
category and type from the label table, laterality as the type modifier (SCT Left/Right), its colour (CIELab) and
the algorithm's name and version. Frames follow the source series slice by slice (BINARY segmentation, empty
frames omitted), so a viewer overlays it on the series it references. dciodvfy validates it and dcmqi (Slicer's
QuantitativeReporting) reads it back voxel for voxel (Testing/imageio/test_dicom_seg_tools.py). The labelmap must
lie on the source series' own grid.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..labels import OutputSegment, load_label_table, output_segments
from .atomic import atomic_path
from .volumes import InputError, dicom_series_files

ALGORITHM_NAME = "SegLossBrain"


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
    """A DICOM SEG references a source series: the input must be a DICOM series folder."""
    if not Path(path).is_dir():
        raise InputError(f"--dicom-seg needs a DICOM series folder as input; {path} is not a folder. Give the "
                         "folder of the DICOM series, or segment it without --dicom-seg")


def _code(entry):
    import highdicom

    return highdicom.sr.CodedConcept(value=entry.value, scheme_designator=entry.scheme, meaning=entry.meaning)


def segment_description(number: int, segment: OutputSegment, version: str):
    import highdicom
    from pydicom.sr.codedict import codes

    terminology = segment.terminology
    description = highdicom.seg.SegmentDescription(
        segment_number=number,
        segment_label=segment.name,
        segmented_property_category=_code(terminology["Category"]),
        segmented_property_type=_code(terminology["Type"]),
        algorithm_type=highdicom.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=highdicom.AlgorithmIdentificationSequence(
            name=ALGORITHM_NAME, family=codes.cid7162.ArtificialIntelligence, version=version),
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


def write_dicom_seg(labels: sitk.Image, series_folder: str | os.PathLike, path: str | os.PathLike,
                    hemispheres: bool = False, version: str = "") -> Path:
    """Write ``labels`` (values in table order, or aseg values with ``hemispheres``; on the grid of the series in
    ``series_folder``) as a DICOM SEG to ``path``, atomically."""
    import highdicom
    import pydicom

    files = dicom_series_files(series_folder)
    array = sitk.GetArrayViewFromImage(labels)
    if array.shape[0] != len(files):
        raise InputError(f"the labelmap has {array.shape[0]} slices but the DICOM series {len(files)}; a DICOM SEG "
                         "needs the labels on the series' own grid (no --output-spacing)")
    sources = [pydicom.dcmread(f) for f in files]
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
        segment_descriptions=[segment_description(n, s, version) for n, s in enumerate(segments, start=1)],
        series_instance_uid=highdicom.UID(),
        series_number=max(int(getattr(sources[0], "SeriesNumber", 0) or 0), 0) + 1000,
        sop_instance_uid=highdicom.UID(),
        instance_number=1,
        manufacturer=ALGORITHM_NAME,
        manufacturer_model_name=ALGORITHM_NAME,
        software_versions=version or "unknown",
        device_serial_number="none",
        content_description="Brain structures (research use, not for clinical decisions)",
        series_description=f"{ALGORITHM_NAME} {'left/right ' if hemispheres else ''}segmentation",
    )
    with atomic_path(path) as temporary:
        seg.save_as(temporary)
    return Path(path)
