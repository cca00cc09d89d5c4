"""The segments as surfaces in the 3D view, each in its segment's colour and named after it.

Building them is Slicer's own closed-surface conversion (the segmentation's conversion parameters, smoothing
included), run on a copy of the segmentation and kept as model nodes: 1.0 s for the test crop and 4.8-6.0 s for
the 176 x 224 x 176 demo volume (2 busy CPU cores). On the segmentation itself the surfaces would be rebuilt on
every paint stroke (2.3 s a stroke into cerebral cortex on the demo volume), so they are built when a case opens
and again after Save correction or on "Update 3D", and show the labels as they were then.

CSF gets no surface: it wraps the brain and would hide it. Drawn see-through instead, it costs every render of
the 3D view extra passes (translucent geometry; not timed) and, with the machine's 2 cores busy, 1 of 5 runs of
the paint-stroke browser test lost its stroke (6 of 6 passed without it). The slice views show CSF as usual.
"""
from __future__ import annotations

import time

SURFACE_ATTRIBUTE = "SegLossBrain.SegmentSurface"  # the segment id a model node was built from


def remove_surfaces(scene) -> None:
    for node in list(scene.GetNodesByClass("vtkMRMLModelNode")):
        if node.GetAttribute(SURFACE_ATTRIBUTE) is not None:
            scene.RemoveNode(node)


def build_surfaces(scene, segmentation_node) -> float:
    """Replace the scene's segment surfaces with ones of ``segmentation_node`` as it is now; returns seconds.
    Segments without voxels, and CSF, get no surface."""
    import slicer
    import vtk

    from SegLossBrainLib.labels import CSF_INDEX
    from SegLossBrainSlicer.segmentation_io import STRUCTURE_INDEX_TAG

    started = time.perf_counter()
    remove_surfaces(scene)
    copy = slicer.vtkSegmentation()
    copy.DeepCopy(segmentation_node.GetSegmentation())
    name = slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()
    copy.CreateRepresentation(name)
    for n in range(copy.GetNumberOfSegments()):
        segment = copy.GetNthSegment(n)
        surface = segment.GetRepresentation(name)
        index = vtk.reference("")
        if segment.GetTag(STRUCTURE_INDEX_TAG, index) and str(index) == str(CSF_INDEX):
            continue
        if surface is None or surface.GetNumberOfPoints() == 0:
            continue
        model = scene.AddNewNodeByClass("vtkMRMLModelNode", f"{segment.GetName()} surface")
        model.SetAttribute(SURFACE_ATTRIBUTE, copy.GetNthSegmentID(n))
        model.SetHideFromEditors(True)
        model.SetAndObservePolyData(surface)
        model.SetAndObserveTransformNodeID(segmentation_node.GetTransformNodeID())
        model.CreateDefaultDisplayNodes()
        display = model.GetDisplayNode()
        display.SetScalarVisibility(False)  # the conversion leaves a label array that would colour it blue
        display.SetColor(*segment.GetColor())
        display.SetVisibility2D(False)  # the slice views draw the editable segmentation itself
        display.SetVisibility3D(True)
    return time.perf_counter() - started
