"""Put results where the user looks for them: in the input volume's study in the Data module.

A DICOM-loaded volume sits in Patient > Study; our segmentation, table and confidence volume go into that
study. A volume loaded from a file sits in the scene or in a folder; results then go beside it.
"""
from __future__ import annotations


def _study_level() -> str:
    import slicer

    return slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMLevelStudy()


def result_parent_item(scene, input_node) -> int | None:
    """Subject hierarchy item that should hold results of ``input_node``, or None without a hierarchy."""
    import slicer

    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if hierarchy is None:
        return None
    item = hierarchy.GetItemByDataNode(input_node)
    if not item:
        return hierarchy.GetSceneItemID()
    parent = hierarchy.GetItemParent(item)
    ancestor = parent
    while ancestor and ancestor != hierarchy.GetSceneItemID():
        if hierarchy.GetItemLevel(ancestor) == _study_level():
            return ancestor
        ancestor = hierarchy.GetItemParent(ancestor)
    return parent or hierarchy.GetSceneItemID()


def place_with_input(scene, input_node, *result_nodes) -> None:
    """Move each result node (creating its item if Slicer has not yet) under the input's study or parent."""
    import slicer

    parent = result_parent_item(scene, input_node)
    if parent is None:
        return
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    for node in result_nodes:
        if node is None:
            continue
        item = hierarchy.GetItemByDataNode(node)
        if item:
            hierarchy.SetItemParent(item, parent)
        else:
            hierarchy.CreateItem(parent, node)
