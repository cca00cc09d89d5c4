"""Label maps (numpy, values in the label table's order) <-> segmentation nodes with names, colours and codes.

Import creates one segment per structure of the label table (19, background excluded), even when the engine
found none of a structure: every result then has the same segments in the same order, which the volumes table,
fine-tuning and comparisons between subjects rely on. Each segment carries its structure index in a tag, so
export still maps correctly after the user renames, reorders or deletes segments.
"""
from __future__ import annotations

import numpy as np

from .i18n import _
from .volume_files import array_from_image, image_from_array, ijk_to_ras, set_ijk_to_ras

STRUCTURE_INDEX_TAG = "SegLossBrain.StructureIndex"
SEGMENT_ID_PREFIX = "SegLossBrain_"


def label_table():
    from SegLossBrainLib.labels import load_label_table  # numpy only: safe before torch is installed

    return load_label_table()


def terminology_string(structure) -> str:
    """Slicer's terminology-entry serialisation of a structure (defined once, in the engine's label table)."""
    return structure.terminology_string()


def segment_id(structure) -> str:
    return f"{SEGMENT_ID_PREFIX}{structure.index:02d}"


def ensure_segmentations_logic(scene) -> None:
    """Some segmentation conversions look up the Segmentations module logic. Slicer provides one; headless
    slicer-core does not, so attach a private one to the scene there (kept alive on the scene object)."""
    try:
        import slicer

        if hasattr(slicer, "modules") and hasattr(slicer.modules, "segmentations"):
            return
        if getattr(scene, "_seglossbrain_segmentations_logic", None) is None:
            logic = slicer.vtkSlicerSegmentationsModuleLogic()
            logic.SetMRMLScene(scene)
            scene._seglossbrain_segmentations_logic = logic
    except AttributeError:  # wrapped VTK objects that refuse new attributes: the caller owns a logic already
        pass


def labels_to_segmentation(labels: np.ndarray, reference_volume, segmentation_node, table=None,
                           hemispheres: bool = False, grid=None):
    """Replace the segments of ``segmentation_node`` with one per structure, read from ``labels``.

    ``labels`` is (k, j, i) on the grid of ``reference_volume``, values 0..num_classes-1, or with ``hemispheres``
    FreeSurfer aseg values with a "Left ..." and "Right ..." segment per paired structure. That grid becomes the
    segmentation's reference geometry and the segmentation follows the volume's parent transform. ``grid``: a
    volume node on another grid of the same volume that ``labels`` lie on (``--output-spacing``), which then
    becomes the reference geometry instead.
    """
    import slicer
    import vtk

    from SegLossBrainLib.labels import output_segments  # numpy only: safe before torch is installed

    table = table or label_table()
    segments = output_segments(table, hemispheres)
    labels = np.asarray(labels)
    grid = reference_volume if grid is None else grid
    dims = grid.GetImageData().GetDimensions()
    if labels.shape != (dims[2], dims[1], dims[0]):
        raise ValueError(_("The label map has shape {found}, the input volume {expected}.").format(
            found=labels.shape, expected=(dims[2], dims[1], dims[0])))
    known = {0} | {segment.value for segment in segments}
    found = set(np.unique(labels).tolist()) if labels.size else set()
    if not found <= known:
        raise ValueError(_("The label map holds values outside the label table's: {values}.").format(
            values=", ".join(str(v) for v in sorted(found - known)[:10])))
    # Label value v goes to the v-th id of the import: number the segments 1..N in output order.
    number = np.zeros(max(known) + 1, np.uint8)
    for n, segment in enumerate(segments, start=1):
        number[segment.value] = n
    scene = segmentation_node.GetScene()
    if scene is not None:
        ensure_segmentations_logic(scene)

    # A temporary labelmap node, never added to the scene, carries the array with the labels' geometry.
    labelmap = slicer.vtkMRMLLabelMapVolumeNode()
    labelmap.SetAndObserveImageData(image_from_array(number[labels.astype(np.int64)]))
    set_ijk_to_ras(labelmap, ijk_to_ras(grid))

    was_modifying = segmentation_node.StartModify()
    try:
        segmentation = segmentation_node.GetSegmentation()
        segmentation.RemoveAllSegments()
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(grid)
        if grid is not reference_volume:  # the geometry is the grid's, the source volume stays the input
            segmentation_node.SetNodeReferenceID(segmentation_node.GetReferenceImageGeometryReferenceRole(),
                                                 reference_volume.GetID())
        # No transform during import: the import would otherwise move the voxels by the transform's inverse.
        segmentation_node.SetAndObserveTransformNodeID(None)
        if segmentation_node.GetDisplayNode() is None and scene is not None:
            segmentation_node.CreateDefaultDisplayNodes()
        ordered_ids = vtk.vtkStringArray()
        for segment in segments:
            add_structure_segment(segmentation, segment.structure, segment)
            ordered_ids.InsertNextValue(output_segment_id(segment))
        imported = slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
            labelmap, segmentation_node, ordered_ids)
        if not imported:
            raise RuntimeError(_("Slicer could not import the label map into the segmentation."))
        # The voxels are in the volume's own frame: put the segmentation under the volume's transform so both
        # move together (nothing is hardened, the input volume is never modified).
        segmentation_node.SetAndObserveTransformNodeID(reference_volume.GetTransformNodeID())
    finally:
        segmentation_node.EndModify(was_modifying)
    return segmentation_node


def output_segment_id(segment) -> str:
    """The structure's id, with ``_left``/``_right`` for a side (the merged ids stay what they always were)."""
    return segment_id(segment.structure) + (f"_{segment.side}" if segment.side else "")


def structure_segment_ids(segmentation_node, index: int) -> list[str]:
    """Ids of the segments standing for structure ``index`` (one, or its left and right), in segment order."""
    import vtk

    segmentation = segmentation_node.GetSegmentation()
    ids = []
    for n in range(segmentation.GetNumberOfSegments()):
        value = vtk.reference("")
        if segmentation.GetNthSegment(n).GetTag(STRUCTURE_INDEX_TAG, value) and str(value) == str(index):
            ids.append(segmentation.GetNthSegmentID(n))
    return ids


def add_structure_segment(segmentation, structure, output=None):
    """A segment for ``structure`` (or for one side of it: ``output``, an OutputSegment) with name, colour and
    codes, and the structure index as a tag, so both sides export back to the structure (fine-tuning reads
    merged labels)."""
    import slicer

    sid = output_segment_id(output) if output is not None else segment_id(structure)
    name = output.name if output is not None else structure.name
    segmentation.AddEmptySegment(sid, name, [c / 255.0 for c in structure.color])
    segment = segmentation.GetSegment(sid)
    codes = output.terminology_string() if output is not None else terminology_string(structure)
    segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), codes)
    segment.SetTag(STRUCTURE_INDEX_TAG, str(structure.index))
    return segment


def structure_index(segment, table) -> int | None:
    """The structure a segment stands for: our tag first, else its name (a segment drawn by hand)."""
    import vtk

    value = vtk.reference("")  # GetTag fills a std::string& out-argument
    if segment.GetTag(STRUCTURE_INDEX_TAG, value):
        try:
            index = int(str(value))
        except ValueError:
            index = -1
        if 0 < index < table.num_classes:
            return index
    try:
        index = table.index_of(segment.GetName())
    except KeyError:
        return None
    return index if index > 0 else None


def segmentation_to_labels(segmentation_node, reference_volume, table=None, ignore_unknown=False) -> np.ndarray:
    """Export to a (k, j, i) uint8 label map on the grid of ``reference_volume``, values in table order.

    Segments whose structure cannot be told (not ours and named like none of the table) raise ValueError,
    listing them, unless ``ignore_unknown``: silently dropping a user's segment would corrupt fine-tuning data.
    """
    import vtk

    table = table or label_table()
    segmentation = segmentation_node.GetSegmentation()
    ids, values, unknown = vtk.vtkStringArray(), vtk.vtkIntArray(), []
    for n in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(n)
        index = structure_index(segment, table)
        if index is None:
            unknown.append(segment.GetName())
            continue
        ids.InsertNextValue(segmentation.GetNthSegmentID(n))
        values.InsertNextValue(index)
    if unknown and not ignore_unknown:
        raise ValueError(_("These segments match no structure of the label table: {names}. Rename them to a "
                           "structure name (e.g. {example}) or remove them.").format(
            names=", ".join(unknown), example=table.names[1]))
    return _merged_labels(segmentation_node, reference_volume, ids, values)


def segment_mask(segmentation_node, segment_id_, reference_volume) -> np.ndarray:
    """(k, j, i) uint8 mask (1 inside) of one segment on the reference volume's grid."""
    import vtk

    ids, values = vtk.vtkStringArray(), vtk.vtkIntArray()
    ids.InsertNextValue(segment_id_)
    values.InsertNextValue(1)
    return _merged_labels(segmentation_node, reference_volume, ids, values)


def _merged_labels(segmentation_node, reference_volume, ids, values) -> np.ndarray:
    import slicer

    dims = reference_volume.GetImageData().GetDimensions()
    if ids.GetNumberOfValues() == 0:
        return np.zeros((dims[2], dims[1], dims[0]), np.uint8)
    merged = slicer.vtkOrientedImageData()
    slicer.vtkSlicerSegmentationsModuleLogic.GenerateMergedLabelmapInReferenceGeometry(
        segmentation_node, reference_volume, ids, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, merged, values)
    extent = merged.GetExtent()
    if extent[0::2] != (0, 0, 0) or merged.GetDimensions() != dims:
        raise RuntimeError(_("Slicer exported the segmentation with an unexpected extent {extent}.").format(
            extent=extent))
    return array_from_image(merged).astype(np.uint8)


def show_3d(segmentation_node, visible: bool) -> None:
    """Surfaces cost time and memory on a 19-structure brain, so they are built only when asked for and
    dropped again when hidden."""
    if visible:
        segmentation_node.CreateClosedSurfaceRepresentation()
    else:
        segmentation_node.RemoveClosedSurfaceRepresentation()
    display = segmentation_node.GetDisplayNode()
    if display is not None:
        display.SetVisibility3D(visible)
