"""Fine-tuning pairs as the scene holds them -> checked (image, labelmap) files for ``seglossbrain finetune``.

A pair is a scalar volume and a segmentation of it. Each segment is matched to a structure of the label table
by its name first (tolerant to case, spaces, ``_`` and ``-``: a segment the user named is taken at its word),
else by the structure-index tag that the module writes on the segments it creates; segments matching neither
are refused by name, since silently dropping one would teach the network that the structure is background.

Labels are exported onto exactly the volume's voxel grid, and the volume is written with its own
(untransformed) geometry, so both files share one grid. A segmentation stored on another voxel grid (drawn on
another volume, oversampled, moved by a different transform) is refused rather than resampled: the user's
corrections would otherwise be blurred without their knowing. Needs no Qt.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .i18n import _
from .input_checks import InputProblem, check_input_volume
from .volume_files import ijk_to_ras, image_from_array, set_ijk_to_ras, write_volume

MIN_STRUCTURES = 2  # the engine's minimum: fewer teach nothing but background
FEW_STRUCTURES = 10  # below this a note says that unlabelled structures are learnt as background
GRID_TOLERANCE = 1e-3  # in voxels


@dataclass(frozen=True)
class SegmentMatch:
    segment_id: str
    segment_name: str
    index: int  # structure index in the label table (1..19)
    by: str  # "name" or "tag"


@dataclass
class PairFiles:
    image: Path
    labels: Path
    volume_name: str
    segmentation_name: str
    structures: list[int]
    notes: list[str] = field(default_factory=list)


def _tag_index(segment, table) -> int | None:
    import vtk

    from .segmentation_io import STRUCTURE_INDEX_TAG

    value = vtk.reference("")
    if not segment.GetTag(STRUCTURE_INDEX_TAG, value):
        return None
    try:
        index = int(str(value))
    except ValueError:
        return None
    return index if 0 < index < table.num_classes else None


def match_segments(segmentation_node, table) -> tuple[list[SegmentMatch], list[str], list[str]]:
    """(matches, names of unmatched segments, names of segments ignored as background)."""
    segmentation = segmentation_node.GetSegmentation()
    matches, unknown, ignored = [], [], []
    for n in range(segmentation.GetNumberOfSegments()):
        segment, segment_id = segmentation.GetNthSegment(n), segmentation.GetNthSegmentID(n)
        name = segment.GetName() or segment_id
        try:
            index = table.index_of(name)
        except KeyError:
            index = None
        if index == 0:
            ignored.append(name)
            continue
        if index is not None:
            matches.append(SegmentMatch(segment_id, name, index, "name"))
            continue
        index = _tag_index(segment, table)
        if index is not None:
            matches.append(SegmentMatch(segment_id, name, index, "tag"))
        else:
            unknown.append(name)
    return matches, unknown, ignored


def _linear_between(from_node, to_node):
    """4x4 numpy matrix taking from_node's frame to to_node's frame (parent transforms), None if non-linear."""
    import slicer
    import vtk

    matrix = vtk.vtkMatrix4x4()
    if not slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(
            from_node.GetParentTransformNode(), to_node.GetParentTransformNode(), matrix):
        return None
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _same_lattice(matrix: np.ndarray, reference: np.ndarray) -> bool:
    """Do two IJK-to-RAS matrices put voxel centres at the same places (up to axis order, flips and an integer
    shift of the index)?"""
    to_reference = np.linalg.inv(reference) @ matrix
    rotation, offset = to_reference[:3, :3], to_reference[:3, 3]
    signed = np.round(rotation)
    if np.abs(rotation - signed).max() > GRID_TOLERANCE or np.abs(offset - np.round(offset)).max() > GRID_TOLERANCE:
        return False
    return bool((np.abs(signed).sum(axis=0) == 1).all() and (np.abs(signed).sum(axis=1) == 1).all())


def grid_problem(volume, segmentation_node, matches) -> str | None:
    """A sentence when the segmentation's voxels are not the volume's voxels; None when they are."""
    import slicer
    import vtk

    names = (volume.GetName(), segmentation_node.GetName())
    to_volume = _linear_between(segmentation_node, volume)
    if to_volume is None:
        return _("'{segmentation}' and '{volume}' are under different non-linear transforms. Put them under the "
                 "same transform (or none), or harden it on both.").format(volume=names[0], segmentation=names[1])
    segmentation = segmentation_node.GetSegmentation()
    labelmap = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    if segmentation.GetSourceRepresentationName() != labelmap:
        return None  # surfaces (e.g. imported models) are rasterised straight onto the volume's grid
    reference = ijk_to_ras(volume)
    for match in matches:
        image = segmentation.GetSegment(match.segment_id).GetRepresentation(labelmap)
        if image is None or image.IsEmpty():
            continue
        matrix = vtk.vtkMatrix4x4()
        image.GetImageToWorldMatrix(matrix)
        lattice = to_volume @ np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
        if not _same_lattice(lattice, reference):
            spacing = np.linalg.norm(lattice[:3, :3], axis=0)
            return _("'{segmentation}' is stored on another voxel grid than '{volume}' (voxel size {found} mm vs "
                     "{expected} mm, or shifted or rotated): training labels must lie on the image's voxels. Pick "
                     "the volume it was drawn on, or in Segment Editor set the segmentation's geometry to "
                     "'{volume}' (Specify geometry button) and check the segments.").format(
                volume=names[0], segmentation=names[1], found="x".join(f"{s:.3g}" for s in spacing),
                expected="x".join(f"{s:.3g}" for s in np.linalg.norm(reference[:3, :3], axis=0)))
    return None


def pair_labels(volume, segmentation_node, table) -> tuple[np.ndarray, list[int], list[str]]:
    """Check one pair and return (labels (k, j, i) uint8 on the volume's grid, structures present, notes).

    Raises InputProblem with a sentence naming the pair and what to do.
    """
    from .segmentation_io import _merged_labels, ensure_segmentations_logic

    if segmentation_node is None:
        raise InputProblem(_("Select a segmentation for '{volume}'.").format(
            volume=volume.GetName() if volume else "?"))
    notes = check_input_volume(volume)
    if segmentation_node.GetSegmentation().GetNumberOfSegments() == 0:
        raise InputProblem(_("'{segmentation}' has no segments.").format(segmentation=segmentation_node.GetName()))
    matches, unknown, ignored = match_segments(segmentation_node, table)
    if unknown:
        raise InputProblem(_("In '{segmentation}', these segments match no structure of the label table: {names}. "
                             "Rename each to a structure name (e.g. '{example}') or delete it.").format(
            segmentation=segmentation_node.GetName(), names=", ".join(f"'{n}'" for n in unknown),
            example=table.names[1]))
    problem = grid_problem(volume, segmentation_node, matches)
    if problem:
        raise InputProblem(problem)
    if ignored:
        notes.append(_("'{segmentation}': segments named like the background ({names}) are left out.").format(
            segmentation=segmentation_node.GetName(), names=", ".join(ignored)))
    import vtk

    ids, values = vtk.vtkStringArray(), vtk.vtkIntArray()
    for match in matches:
        ids.InsertNextValue(match.segment_id)
        values.InsertNextValue(match.index)
    scene = segmentation_node.GetScene()
    if scene is not None:
        ensure_segmentations_logic(scene)
    labels = _merged_labels(segmentation_node, volume, ids, values)
    counts = np.bincount(labels.ravel(), minlength=table.num_classes)
    present = [i for i in range(1, table.num_classes) if counts[i] > 0]
    where = {"segmentation": segmentation_node.GetName(), "volume": volume.GetName()}
    if not present:
        raise InputProblem(_("'{segmentation}' is empty within '{volume}': no structure has a voxel inside the "
                             "volume. Pick the segmentation made on this volume.").format(**where))
    if len(present) < MIN_STRUCTURES:
        raise InputProblem(_("'{segmentation}' holds a single structure ({name}) within '{volume}'. Fine-tuning the "
                             "19-structure model needs full segmentations: everything unlabelled is learnt as "
                             "background.").format(name=table.names[present[0]], **where))
    if len(present) < FEW_STRUCTURES:
        notes.append(_("'{segmentation}' labels only {count} of {total} structures; the others will be learnt as "
                       "background there.").format(count=len(present), total=table.num_classes - 1, **where))
    return labels, present, notes


def write_labels(labels: np.ndarray, volume, path) -> None:
    """A labelmap file with exactly ``volume``'s own (untransformed) geometry."""
    import slicer

    node = slicer.vtkMRMLLabelMapVolumeNode()  # never added to the scene
    node.SetAndObserveImageData(image_from_array(np.ascontiguousarray(labels, dtype=np.uint8)))
    set_ijk_to_ras(node, ijk_to_ras(volume))
    write_volume(node, path)


def check_pair_list(pairs) -> None:
    """Refuse an empty list and a volume used twice (its copies would be both trained on and validated on)."""
    if not pairs:
        raise InputProblem(_("Add at least one pair: a brain MRI and its corrected segmentation."))
    seen = set()
    for volume, _segmentation in pairs:
        if volume is None:
            raise InputProblem(_("Select a volume in every row of the pairs table, or remove the empty rows."))
        if volume.GetID() in seen:
            raise InputProblem(_("'{volume}' is in more than one pair; use each volume once.").format(
                volume=volume.GetName()))
        seen.add(volume.GetID())


def write_pairs(pairs, folder, table=None) -> list[PairFiles]:
    """Check every pair and write each as ``pairNN_image.nrrd`` + ``pairNN_labels.nrrd`` into ``folder``.

    Every problem found is reported (one line per pair) in one InputProblem; files of pairs that passed may then
    be in ``folder`` already (a temporary folder: the caller removes it).
    """
    from .segmentation_io import label_table

    table = table or label_table()
    check_pair_list(pairs)
    folder = Path(folder)
    written, problems = [], []
    for number, (volume, segmentation) in enumerate(pairs, start=1):
        try:
            labels, present, notes = pair_labels(volume, segmentation, table)
        except InputProblem as problem:
            problems.append(_("Pair {number}: {problem}").format(number=number, problem=problem))
            continue
        if problems:
            continue  # nothing will run: do not spend time writing
        image_path, labels_path = folder / f"pair{number:02d}_image.nrrd", folder / f"pair{number:02d}_labels.nrrd"
        write_volume(volume, image_path)
        write_labels(labels, volume, labels_path)
        written.append(PairFiles(image_path, labels_path, volume.GetName(), segmentation.GetName(), present, notes))
    if problems:
        raise InputProblem("\n".join(problems))
    return written
