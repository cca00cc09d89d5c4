"""What the module panel does: Segment/Cancel, progress and log, results, the least-confident list, Show 3D.

Slicer only (Qt). The work itself is in Qt-free files: a :class:`SegmentRun` runs the engine in a child process
and this panel polls it with a QTimer, so Slicer stays responsive and Cancel acts at once.
"""
import logging
from dataclasses import replace

import qt
import slicer
import vtk
from slicer.util import VTKObservationMixin

from . import confidence, dependencies, model_choices, segmentation_io
from .cli_protocol import SegmentOptions
from .i18n import _
from .input_checks import InputProblem, check_output_spacing
from .segment_job import NO_BRAIN
from .parameters import validate
from .segment_run import SegmentError

POLL_INTERVAL_MS = 200
PROGRESS_STEPS = 1000


class SegmentPanel(VTKObservationMixin):
    def __init__(self, ui, logic):
        VTKObservationMixin.__init__(self)
        self.ui = ui
        self.logic = logic
        self.parameters = None
        self._gui_tag = None
        self._run = None
        self._run_parameters = None
        self._cancel_reason = None
        self._choices = []
        self._missing_packages = dependencies.missing_requirements()
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.timeout.connect(self._poll)

        ui.progressBar.setRange(0, PROGRESS_STEPS)
        ui.progressBar.setVisible(False)
        ui.modelMessageLabel.setVisible(False)
        ui.applyButton.clicked.connect(self.on_apply)
        ui.modelSelector.currentIndexChanged.connect(self.on_model_changed)
        ui.show3DButton.toggled.connect(self.on_show_3d)
        ui.lowConfidenceList.itemClicked.connect(self.on_low_confidence_clicked)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeAboutToBeRemovedEvent, self._on_node_removed)
        self.refresh_models()

    # -- parameter node -----------------------------------------------------------------------------------
    def set_parameter_node(self, parameters) -> None:
        if self.parameters is not None:
            if self._gui_tag is not None:
                self.parameters.disconnectGui(self._gui_tag)
            self.removeObserver(self.parameters.parameterNode, vtk.vtkCommand.ModifiedEvent, self.update_state)
        self.parameters, self._gui_tag = parameters, None
        if parameters is not None:
            self._gui_tag = parameters.connectGui(self.ui)
            self.addObserver(parameters.parameterNode, vtk.vtkCommand.ModifiedEvent, self.update_state)
            self._select_model(parameters.modelKey)
        self.update_state()

    def update_state(self, caller=None, event=None) -> None:
        if self._run is not None:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.toolTip = _("Stop the segmentation; the scene is left unchanged.")
            self.ui.applyButton.enabled = True
            return
        self.ui.applyButton.text = _("Segment")
        if self.parameters is None:
            self.ui.applyButton.enabled = False
            return
        can_run, reason = validate(self.parameters, self.current_model(), self._missing_packages)
        self.ui.applyButton.enabled = can_run
        self.ui.applyButton.toolTip = reason

    # -- models -------------------------------------------------------------------------------------------
    def refresh_models(self) -> None:
        self._choices, message = model_choices.available_models()
        selector = self.ui.modelSelector
        was_blocked = selector.blockSignals(True)
        selector.clear()
        for choice in self._choices:
            selector.addItem(choice.label)
            selector.setItemData(selector.count - 1, choice.path, qt.Qt.ToolTipRole)
        if not self._choices:
            selector.addItem(_("(no model available)"))
        selector.enabled = bool(self._choices)
        selector.blockSignals(was_blocked)
        self.ui.modelMessageLabel.text = message or ""
        self.ui.modelMessageLabel.setVisible(bool(message))
        if self.parameters is not None:
            self._select_model(self.parameters.modelKey)

    def use_model(self, key=None) -> None:
        """The model store changed (fine-tune, activate, revert, delete): list the models again and select
        ``key`` when given (else keep the current choice where it still exists)."""
        if key and self.parameters is not None:
            self.parameters.modelKey = key
        self.refresh_models()

    def _select_model(self, key) -> None:
        choice = model_choices.find_choice(self._choices, key)
        if choice is not None:
            self.ui.modelSelector.currentIndex = self._choices.index(choice)
            if self.parameters is not None and self.parameters.modelKey != choice.key:
                self.parameters.modelKey = choice.key

    def current_model(self):
        index = self.ui.modelSelector.currentIndex
        return self._choices[index] if 0 <= index < len(self._choices) else None

    def on_model_changed(self, index) -> None:
        choice = self.current_model()
        if self.parameters is not None and choice is not None:
            self.parameters.modelKey = choice.key

    # -- running ------------------------------------------------------------------------------------------
    def on_apply(self) -> None:
        if self._run is not None:
            self.cancel(_("Cancelled. The scene was left unchanged."))
            return
        try:
            if self._missing_packages:
                if not dependencies.ensure_dependencies():
                    return
                self._missing_packages = dependencies.missing_requirements()
                self.refresh_models()
            choice = self.current_model()
            if choice is None:
                raise InputProblem(self.ui.modelMessageLabel.text or _("No model is available."))
            options = SegmentOptions(choice.path, self.parameters.device, self.parameters.tta,
                                     self.parameters.confidence, self.parameters.hemispheres,
                                     output_spacing=check_output_spacing(self.parameters.inputVolume,
                                                                         self.parameters.outputSpacing),
                                     pial_refinement=self.parameters.pialRefinement)
        except (InputProblem, OSError) as error:
            slicer.util.errorDisplay(str(error), windowTitle=_("Cannot segment"))
            return
        self._start(self.parameters, options, choice.sha256)

    def _start(self, parameters, options, model_sha256) -> None:
        try:
            run = self.logic.create_run(parameters, options, model_sha256=model_sha256)
            run.start()
        except (InputProblem, OSError) as error:
            slicer.util.errorDisplay(str(error), windowTitle=_("Cannot segment"))
            return
        run.model_sha256 = model_sha256  # for a second try with --force
        # The run reports to the parameter node it started from, even if the module is left meanwhile.
        self._run, self._run_parameters, self._cancel_reason = run, parameters, None
        self.ui.logText.clear()
        for note in run.notes:
            self.ui.logText.appendPlainText(note)
        self.ui.progressBar.value = 0
        self.ui.progressBar.setVisible(True)
        self.ui.statusLabel.text = _("Starting the segmentation engine...")
        self._timer.start()
        self.update_state()

    def cancel(self, reason) -> None:
        if self._run is not None:
            self._cancel_reason = reason
            self.ui.statusLabel.text = _("Cancelling...")
            self._run.cancel()

    def _poll(self) -> None:
        run = self._run
        if run is None:
            self._timer.stop()
            return
        update = run.poll()
        if update.fraction is not None:
            self.ui.progressBar.value = int(update.fraction * PROGRESS_STEPS)
        if update.status and self._cancel_reason is None:
            self.ui.statusLabel.text = update.status
        for line in update.log_lines:
            self.ui.logText.appendPlainText(line)
        if update.done:
            self._finish()

    def _finish(self) -> None:
        self._timer.stop()
        run, self._run = self._run, None
        self.ui.progressBar.setVisible(False)
        try:
            with slicer.util.WaitCursor():
                result = run.finish()
        except SegmentError as error:
            if NO_BRAIN in str(error) and not run.options.force and slicer.util.confirmYesNoDisplay(
                    _("{message}\n\nSegment it anyway?").format(message=str(error).split(". Check")[0]),
                    windowTitle=_("No brain found")):
                self._start(self._run_parameters, replace(run.options, force=True), run.model_sha256)
                return
            self.ui.statusLabel.text = _("Segmentation failed.")
            self.ui.logCollapsibleButton.collapsed = False
            slicer.util.errorDisplay(str(error), windowTitle=_("Segmentation failed"),
                                     detailedText="\n".join(error.log[-200:]))
        except Exception as error:  # a bug here must not leave the panel stuck in "Cancel"
            logging.exception("SegLossBrain: building the results failed")
            self.ui.statusLabel.text = _("Segmentation failed.")
            slicer.util.errorDisplay(_("Building the results failed: {error}").format(error=error),
                                     windowTitle=_("Segmentation failed"))
        else:
            if result is None:
                self.ui.statusLabel.text = self._cancel_reason or _("Cancelled. The scene was left unchanged.")
            else:
                self._show_result(run, result)
        finally:
            self.update_state()

    def _show_result(self, run, result) -> None:
        parameters = self._run_parameters
        with slicer.util.NodeModify(parameters.parameterNode):
            parameters.outputSegmentation = result.segmentation
            parameters.volumesTable = result.volumes_table
            if result.confidence_volume is not None:
                parameters.confidenceVolume = result.confidence_volume
        slicer.util.setSliceViewerLayers(background=run.input_volume, fit=False)
        self.ui.volumesTableView.setMRMLTableNode(result.volumes_table)
        self.ui.lowConfidenceList.clear()
        for name, reason in result.qc_flags.items():
            entry = qt.QListWidgetItem(_("QC: {name}: {reason}").format(name=name, reason=reason))
            entry.setData(qt.Qt.UserRole, segmentation_io.label_table().index_of(name))
            self.ui.lowConfidenceList.addItem(entry)
        for item in result.lowest_confidence:
            entry = qt.QListWidgetItem(_("{name}: mean confidence {mean:.2f}").format(name=item.name, mean=item.mean))
            entry.setData(qt.Qt.UserRole, item.index)
            self.ui.lowConfidenceList.addItem(entry)
        was_blocked = self.ui.show3DButton.blockSignals(True)
        self.ui.show3DButton.checked = False
        self.ui.show3DButton.blockSignals(was_blocked)
        self.ui.show3DButton.enabled = True
        total = sum(row.volume_ml for row in result.volumes)
        status = _("Done: {count} structures, {total:.0f} mL in total.").format(count=len(result.volumes),
                                                                             total=total)
        self.ui.statusLabel.text = "\n".join([status] + result.notes)

    # -- results ------------------------------------------------------------------------------------------
    def on_show_3d(self, checked) -> None:
        segmentation = self.parameters.outputSegmentation if self.parameters else None
        if segmentation is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not build the 3D surfaces."), waitCursor=True):
            segmentation_io.show_3d(segmentation, checked)

    def on_low_confidence_clicked(self, item) -> None:
        segmentation = self.parameters.outputSegmentation if self.parameters else None
        if segmentation is None:
            return
        table = segmentation_io.label_table()
        structure = table.structures[int(item.data(qt.Qt.UserRole))]
        point = None
        for segment_id in segmentation_io.structure_segment_ids(segmentation, structure.index):  # left, then right
            point = point if point is not None else confidence.segment_view_point(segmentation, segment_id)
        if point is None:
            self.ui.statusLabel.text = _("'{name}' is empty or was removed from the segmentation.").format(
                name=structure.name)
            return
        confidence.centre_views_on(slicer.mrmlScene, point)

    # -- scene events -------------------------------------------------------------------------------------
    @vtk.calldata_type(vtk.VTK_OBJECT)
    def _on_node_removed(self, caller, event, node) -> None:
        if self._run is not None and node is self._run.input_volume:
            self.cancel(_("The input volume was removed: segmentation cancelled, nothing was added."))

    def on_scene_closing(self) -> None:
        self.cancel(_("The scene was closed: segmentation cancelled, nothing was added."))
        # The table view is given no scene (with a scene but no table view node, a qMRMLTableView empties itself
        # after every batch operation, e.g. loading a scene or a DICOM study), so nothing else clears it.
        self.ui.volumesTableView.setMRMLTableNode(None)
        self.ui.lowConfidenceList.clear()
        self.ui.show3DButton.enabled = False

    def cleanup(self) -> None:
        """Module reloaded or Slicer closing: never leave a child process behind."""
        self._timer.stop()
        if self._run is not None:
            self._run.abandon()
            self._run = None
        self.set_parameter_node(None)
        self.removeObservers()
