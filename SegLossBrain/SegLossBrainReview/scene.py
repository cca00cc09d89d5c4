"""A case into the MRML scene: the scan as a volume node, its labels as the product's segmentation node (names,
colours, SNOMED CT codes: ``SegLossBrainSlicer.segmentation_io``, the Slicer module's own code), the volumes table
and the QC flags. A scan without labels is segmented here, in this process, with the active model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .cases import Case
from .inputs import CaseData


@dataclass
class VolumeRow:
    index: int
    name: str
    volume_ml: float
    color: str  # "#rrggbb"
    flag: str = ""  # the QC reason, "" when not flagged
    confidence: float | None = None  # mean confidence over the structure, when the confidence is known


@dataclass
class LoadedCase:
    case: Case
    volume: object  # vtkMRMLScalarVolumeNode
    segmentation: object  # vtkMRMLSegmentationNode
    rows: list[VolumeRow]
    warnings: list[str] = field(default_factory=list)  # whole-case QC items (no structure named)
    model: str = ""
    confidence: object = None  # vtkMRMLScalarVolumeNode of the confidence map, or None (labels from a file)


def segment_scan(data: CaseData, case: Case, progress=None) -> None:
    """Labels (and confidence) for a scan with the active model; the QC report becomes the case's flags.

    Forced: a scan whose brain the no-brain check doubts is still segmented, that check's sentence then heads
    the case's QC warnings (a person is looking at the result; ``segment`` on the command line refuses it)."""
    import SimpleITK as sitk

    from SegLossBrainLib.inference.segment import segment
    from SegLossBrainLib.models.store import model_identity

    model = model_identity(None)  # the active version, named as every command names it
    result = segment(data.image, model=model["path"], with_confidence=True, progress=progress, force=True)
    data.labels = sitk.GetArrayFromImage(result.labels).astype(np.uint8)
    data.hemispheres, data.sided = False, None
    data.confidence = sitk.GetArrayFromImage(result.confidence).astype(np.float32)
    quality = result.quality
    if quality is not None:
        case.qc = list(quality.warnings) + [f"{name}: {reason}" for name, reason in quality.flags.items()]
    case.qc_known = True
    case.model = model["name"]


def volume_rows(labels: np.ndarray, voxel_mm3: float, case: Case, confidence=None) -> list[VolumeRow]:
    """The volumes table (mL), QC-flagged structures first, with each structure's mean confidence when known.
    Flags: the case's own (``batch``/``segment``), else the engine's volume-range check on these labels (no
    confidence is known for labels read from a file)."""
    from SegLossBrainLib.labels import load_label_table
    from SegLossBrainLib.postprocessing.qc import structure_flags
    from SegLossBrainSlicer.confidence import mean_confidence
    from SegLossBrainSlicer.volume_table import structure_volumes

    table = load_label_table()
    rows = structure_volumes(labels, voxel_mm3, table)
    if case.qc_known:
        flags = {}
        for item in case.qc:
            name, _, reason = item.partition(":")
            if reason and name.strip() in table.names:
                flags[name.strip()] = reason.strip()
    else:
        flags = structure_flags({row.name: row.volume_ml for row in rows}, {})
    colour = {s.index: "#%02x%02x%02x" % tuple(s.color) for s in table.structures}
    means = mean_confidence(labels, confidence, table.num_classes) if confidence is not None else {}
    result = [VolumeRow(r.index, r.name, round(r.volume_ml, 3), colour[r.index], flags.get(r.name, ""),
                        means.get(r.index)) for r in rows]
    return sorted(result, key=lambda r: (not r.flag, r.index))


def load_case(scene, case: Case, data: CaseData) -> LoadedCase:
    """Replace the scene's volume and segmentation with ``case``'s (``data`` read and checked beforehand)."""
    import SimpleITK as sitk

    from SegLossBrainSlicer.segmentation_io import labels_to_segmentation
    from SegLossBrainSlicer.volume_files import add_volume_node, ijk_to_ras_from_itk, voxel_volume_mm3

    from .overlay import add_confidence_node

    for class_name in ("vtkMRMLSegmentationNode", "vtkMRMLScalarVolumeNode"):
        for node in list(scene.GetNodesByClass(class_name)):
            scene.RemoveNode(node)
    image = data.image
    array = sitk.GetArrayFromImage(image)
    array = array.astype(np.int16 if np.issubdtype(array.dtype, np.integer) and np.abs(array).max() < 32768
                         else np.float32)
    matrix = ijk_to_ras_from_itk(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    volume = add_volume_node(scene, case.case_id, array, matrix)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{case.case_id} labels")
    segmentation.CreateDefaultDisplayNodes()
    if data.hemispheres:
        labels_to_segmentation(data.sided, volume, segmentation, hemispheres=True)
    else:
        labels_to_segmentation(data.labels, volume, segmentation)
    confidence = None
    if data.confidence is not None:
        confidence = add_confidence_node(scene, case.case_id, data.confidence, matrix)
    rows = volume_rows(data.labels, voxel_volume_mm3(volume), case, data.confidence)
    warnings = [item for item in case.qc if item.partition(":")[0].strip() not in {r.name for r in rows}]
    return LoadedCase(case, volume, segmentation, rows, warnings, case.model, confidence)
