"""Structure volumes (mL) from a label map, and the table node that shows them.

Volumes are counted from the label map the segmentation was built from, on the input grid, so they are
exactly voxel count x voxel volume: no surface or resampling approximation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .i18n import _

COLUMN_STRUCTURE = "Structure"
COLUMN_LABEL = "Label"
COLUMN_VOXELS = "Voxels"
COLUMN_VOLUME = "Volume_mL"
COLUMN_CONFIDENCE = "Mean_confidence"
COLUMN_LEFT, COLUMN_RIGHT, COLUMN_ASYMMETRY = "Left_mL", "Right_mL", "Asymmetry_index"
COLUMN_QC = "QC"


@dataclass(frozen=True)
class StructureVolume:
    index: int
    name: str
    voxels: int
    volume_ml: float


def structure_volumes(labels: np.ndarray, voxel_volume_mm3: float, table) -> list[StructureVolume]:
    """One row per structure (background excluded), in table order, absent structures with 0 mL."""
    counts = np.bincount(np.asarray(labels).ravel().astype(np.int64), minlength=table.num_classes)
    rows = []
    for structure in table.structures[1:]:
        voxels = int(counts[structure.index])
        rows.append(StructureVolume(structure.index, structure.name, voxels, voxels * voxel_volume_mm3 / 1000.0))
    return rows


def side_volumes(sided_labels: np.ndarray, voxel_volume_mm3: float, table) -> dict:
    """{structure index: (left mL, right mL)} for the paired structures of a FreeSurfer-valued label map."""
    counts = np.bincount(np.asarray(sided_labels).ravel().astype(np.int64), minlength=256)
    return {s.index: tuple(counts[v] * voxel_volume_mm3 / 1000.0 for v in s.freesurfer_sides)
            for s in table.structures if s.paired}


def fill_volumes_table(table_node, rows: list[StructureVolume], mean_confidence: dict | None = None,
                       sides: dict | None = None, qc: dict | None = None) -> None:
    """Write rows into a vtkMRMLTableNode, replacing its content. Mean confidence is added when known; left and
    right volumes with the asymmetry index (L - R) / ((L + R) / 2) when ``sides`` is given; the QC flags (by
    structure name) when ``qc`` is given."""
    import vtk

    columns = [
        (vtk.vtkStringArray(), COLUMN_STRUCTURE, _("Structure"), ""),
        (vtk.vtkIntArray(), COLUMN_LABEL, _("Label"), ""),
        (vtk.vtkIntArray(), COLUMN_VOXELS, _("Voxels"), ""),
        (vtk.vtkDoubleArray(), COLUMN_VOLUME, _("Volume"), "mL"),
    ]
    if mean_confidence is not None:
        columns.append((vtk.vtkDoubleArray(), COLUMN_CONFIDENCE, _("Mean confidence"), ""))
    if sides is not None:
        columns += [(vtk.vtkDoubleArray(), COLUMN_LEFT, _("Left"), "mL"), (vtk.vtkDoubleArray(), COLUMN_RIGHT,
                     _("Right"), "mL"), (vtk.vtkDoubleArray(), COLUMN_ASYMMETRY, _("Asymmetry index"), "")]
    if qc is not None:
        columns.append((vtk.vtkStringArray(), COLUMN_QC, _("QC"), ""))
    named = {name: array for array, name, _title, _unit in columns}
    for array, name, _title, _unit in columns:
        array.SetName(name)
    for row in rows:
        columns[0][0].InsertNextValue(row.name)
        columns[1][0].InsertNextValue(row.index)
        columns[2][0].InsertNextValue(row.voxels)
        columns[3][0].InsertNextValue(round(row.volume_ml, 4))
        if mean_confidence is not None:
            value = mean_confidence.get(row.index)
            columns[4][0].InsertNextValue(float("nan") if value is None else round(float(value), 4))
        if sides is not None:
            left, right = sides.get(row.index, (float("nan"), float("nan")))
            total = left + right
            named[COLUMN_LEFT].InsertNextValue(round(left, 4))
            named[COLUMN_RIGHT].InsertNextValue(round(right, 4))
            named[COLUMN_ASYMMETRY].InsertNextValue(round((left - right) / (total / 2), 4) if total > 0 else float("nan"))
        if qc is not None:
            named[COLUMN_QC].InsertNextValue(qc.get(row.name, ""))

    was_modifying = table_node.StartModify()
    try:
        table_node.RemoveAllColumns()
        for array, name, title, unit in columns:
            table_node.AddColumn(array)
            table_node.SetColumnTitle(name, title)
            if unit:
                table_node.SetColumnUnitLabel(name, unit)
        table_node.SetUseColumnTitleAsColumnHeader(True)
        table_node.SetLocked(True)  # computed values: editing them in the table view would only mislead
    finally:
        table_node.EndModify(was_modifying)


def read_volumes_table(table_node) -> dict[str, float]:
    """{structure name: mL} back from a table node (for tests and scripts)."""
    table = table_node.GetTable()
    names = table.GetColumnByName(COLUMN_STRUCTURE)
    volumes = table.GetColumnByName(COLUMN_VOLUME)
    return {names.GetValue(r): volumes.GetValue(r) for r in range(table.GetNumberOfRows())}
