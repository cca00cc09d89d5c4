"""The confidence map as an optional overlay of the slice views: where the network was less sure than
``SHOWN_BELOW`` (the winning class's probability, ``segment(..., with_confidence=True)``), the voxel is tinted
magenta, deeper the less sure; where it was surer, the scan shows unchanged. Drawn voxel by voxel (no
interpolation) in Slicer's foreground layer; while it is on, the segments are drawn as outlines only (their fill
would cover it).

The confidence is known for a case segmented by the page (no ``--labels``, or after Activate); labels read from
a file have none, and the toggle says so.
"""
from __future__ import annotations

import numpy as np

SHOWN_BELOW = 0.9  # voxels with a lower confidence are tinted
OPACITY = 0.6  # of the tint over the scan
LEAST_SURE = (255, 0, 255)  # confidence 0: magenta
NEAR_THRESHOLD = (255, 200, 255)  # confidence SHOWN_BELOW: pale magenta
COLOURS = 64
COLOUR_NODE_NAME = "SegLossBrain confidence"
FILL_ATTRIBUTE = "SegLossBrain.fillBeforeConfidence"  # the segments' 2D fill opacity while the overlay hides it


def add_confidence_node(scene, name: str, confidence: np.ndarray, matrix: np.ndarray):
    """A scalar volume node of ``confidence`` (k, j, i) on the scan's grid, displayed as the overlay's tint."""
    from SegLossBrainSlicer.volume_files import add_volume_node

    node = add_volume_node(scene, f"{name} confidence", np.asarray(confidence, np.float32), matrix)
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(_colour_node(scene).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, SHOWN_BELOW)
    display.SetInterpolate(False)
    display.SetApplyThreshold(True)
    display.SetLowerThreshold(-1.0)
    display.SetUpperThreshold(SHOWN_BELOW)  # surer voxels are transparent
    return node


def _colour_node(scene):
    import slicer

    existing = scene.GetFirstNodeByName(COLOUR_NODE_NAME)
    if existing is not None:
        return existing
    node = slicer.vtkMRMLColorTableNode()
    node.SetName(COLOUR_NODE_NAME)
    node.SetTypeToUser()
    node.SetNumberOfColors(COLOURS)
    for i in range(COLOURS):
        share = i / (COLOURS - 1)
        rgb = [(a + (b - a) * share) / 255 for a, b in zip(LEAST_SURE, NEAR_THRESHOLD)]
        node.SetColor(i, f"{i}", *rgb, 1.0)
    node.SetHideFromEditors(True)
    scene.AddNode(node)
    return node


def show_confidence(view_manager, node, segmentation, visible: bool) -> None:
    """The overlay on (``node`` in every slice view's foreground; the segments' fill hidden, their outlines kept,
    since segments are drawn above the volume layers and would hide the tint) or off (as before)."""
    for view in view_manager.get_slice_views():
        view.set_foreground_volume_id(node.GetID() if (visible and node is not None) else None)
        view.set_foreground_opacity(OPACITY)
    display = segmentation.GetDisplayNode() if segmentation is not None else None
    if display is None:
        return
    kept = display.GetAttribute(FILL_ATTRIBUTE)
    if visible and node is not None and kept is None:
        display.SetAttribute(FILL_ATTRIBUTE, repr(display.GetOpacity2DFill()))
        display.SetOpacity2DFill(0.0)
    elif not visible and kept is not None:
        display.SetOpacity2DFill(float(kept))
        display.RemoveAttribute(FILL_ATTRIBUTE)
