"""What a fine-tune shows in the scene: a live chart of the training loss and the validation Dice, and a table of
Dice per structure before and after. Plain MRML (table, plot series and plot chart nodes), no Qt: the panel
puts the chart in a plot view.

Both curves share one axis: Dice lies in [0, 1] and the losses offered (ExpLog, GDL, WCE) are of the same order
once training is under way, which keeps the two readable together without a second axis MRML lacks.
"""
from __future__ import annotations

import math

from .i18n import _

STEP, LOSS, MEAN_DICE = "Step", "Loss", "Mean_Dice"
STRUCTURE, BEFORE, AFTER, CHANGE = "Structure", "Before", "After", "Change"
LOSS_COLOUR, DICE_COLOUR = (0.85, 0.33, 0.10), (0.0, 0.45, 0.74)


def _number(value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return value if math.isfinite(value) else float("nan")


def _in_scene(scene, node) -> bool:
    return node is not None and node.GetScene() is scene and scene.GetNodeByID(node.GetID()) is node


def _new_table(scene, name: str, columns: list[tuple[str, str]]):
    import vtk

    node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    for column, title in columns:
        array = vtk.vtkDoubleArray()
        array.SetName(column)
        node.AddColumn(array)
        node.SetColumnTitle(column, title)
    node.SetUseColumnTitleAsColumnHeader(True)
    node.SetLocked(True)
    return node


def _append_rows(table_node, rows: list[tuple]) -> None:
    """Append rows of numbers to a table of double columns, with one Modified at the end."""
    if not rows:
        return
    table = table_node.GetTable()
    arrays = [table.GetColumn(c) for c in range(table.GetNumberOfColumns())]
    was_modifying = table_node.StartModify()
    try:
        for row in rows:
            for array, value in zip(arrays, row):
                array.InsertNextValue(_number(value))
        for array in arrays:
            array.Modified()
        table.Modified()
        table_node.Modified()
    finally:
        table_node.EndModify(was_modifying)


class TrainingPlot:
    """Loss per step and mean validation Dice per validation, as two series of one chart, updated live."""

    def __init__(self, scene, title: str):
        import slicer

        self.scene = scene
        self.loss_table = _new_table(scene, _("{title} loss").format(title=title),
                                     [(STEP, _("Step")), (LOSS, _("Loss"))])
        self.dice_table = _new_table(scene, _("{title} validation Dice").format(title=title),
                                     [(STEP, _("Step")), (MEAN_DICE, _("Mean Dice"))])
        self.loss_series = self._series(_("Training loss"), self.loss_table, LOSS, LOSS_COLOUR,
                                        slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
        self.dice_series = self._series(_("Validation Dice (mean)"), self.dice_table, MEAN_DICE, DICE_COLOUR,
                                        slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
        self.chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", _("{title} training").format(title=title))
        self.chart.SetTitle(_("Fine-tuning: {title}").format(title=title))
        self.chart.SetXAxisTitle(_("step"))
        self.chart.SetYAxisTitle(_("loss / Dice"))
        self.chart.AddAndObservePlotSeriesNodeID(self.loss_series.GetID())
        self.chart.AddAndObservePlotSeriesNodeID(self.dice_series.GetID())

    def _series(self, name, table_node, column, colour, marker):
        import slicer

        series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", name)
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetXColumnName(STEP)
        series.SetYColumnName(column)
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetMarkerStyle(marker)
        series.SetColor(*colour)
        return series

    @property
    def nodes(self) -> list:
        return [self.loss_table, self.dice_table, self.loss_series, self.dice_series, self.chart]

    @property
    def attached(self) -> bool:
        """False once any node left the scene (deleted by the user, scene closed): updates are then skipped."""
        return all(_in_scene(self.scene, node) for node in self.nodes)

    def add_losses(self, points: list[tuple[int, float]]) -> None:
        if self.attached:
            _append_rows(self.loss_table, points)

    def add_validations(self, records: list[dict]) -> None:
        if self.attached:
            _append_rows(self.dice_table, [(r["step"], r.get("mean")) for r in records])

    def remove(self) -> None:
        for node in self.nodes:
            if _in_scene(self.scene, node):
                self.scene.RemoveNode(node)


def dice_table(scene, title: str):
    """An empty Before / After Dice table node (filled by :func:`fill_dice_table`)."""
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", _("{title} Dice before and after").format(title=title))
    fill_dice_table(node, None, None, [])
    return node


def fill_dice_table(table_node, before: dict | None, after: dict | None, names: list[str]) -> None:
    """Rows: the mean, then each structure of ``names``; columns Dice before, after and the change.

    ``before`` / ``after`` are validation records ``{"mean": float|None, "dice": {structure: float|None}}``;
    missing values (structure absent from the validation case, or not measured yet) are NaN.
    """
    import vtk

    before, after = before or {}, after or {}
    rows = [(_("mean"), before.get("mean"), after.get("mean"))]
    rows += [(name, (before.get("dice") or {}).get(name), (after.get("dice") or {}).get(name)) for name in names]
    columns = [(vtk.vtkStringArray(), STRUCTURE, _("Structure")), (vtk.vtkDoubleArray(), BEFORE, _("Before")),
               (vtk.vtkDoubleArray(), AFTER, _("After")), (vtk.vtkDoubleArray(), CHANGE, _("Change"))]
    for array, name, _title in columns:
        array.SetName(name)
    for name, old, new in rows:
        old, new = _number(old), _number(new)
        columns[0][0].InsertNextValue(name)
        columns[1][0].InsertNextValue(round(old, 4) if math.isfinite(old) else old)
        columns[2][0].InsertNextValue(round(new, 4) if math.isfinite(new) else new)
        columns[3][0].InsertNextValue(round(new - old, 4) if math.isfinite(new - old) else float("nan"))
    was_modifying = table_node.StartModify()
    try:
        table_node.SetLocked(False)
        table_node.RemoveAllColumns()
        for array, name, title in columns:
            table_node.AddColumn(array)
            table_node.SetColumnTitle(name, title)
        table_node.SetUseColumnTitleAsColumnHeader(True)
        table_node.SetLocked(True)
    finally:
        table_node.EndModify(was_modifying)


def read_dice_table(table_node) -> dict[str, tuple[float, float, float]]:
    """{structure or 'mean': (before, after, change)} back from a table node (tests and scripts)."""
    table = table_node.GetTable()
    names = table.GetColumnByName(STRUCTURE)
    values = [table.GetColumnByName(c) for c in (BEFORE, AFTER, CHANGE)]
    return {names.GetValue(r): tuple(v.GetValue(r) for v in values) for r in range(table.GetNumberOfRows())}
