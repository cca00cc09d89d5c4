"""The Fine-tune section: pairs table, loss and settings, Start/Stop, live plot and Dice table, model versions.

Slicer only (Qt). The work is in Qt-free files: :class:`FinetuneJob` (pairs -> files -> engine child process),
``plots`` (chart and tables), ``model_versions`` (the store's actions, each a child process). A QTimer polls
them; the Segment section has its own runner, so segmenting goes on while a fine-tune runs.
"""
import logging
import time

import qt
import slicer

from . import dependencies, model_versions, plots
from .finetune_job import CANCELLED, FAILED, SUCCEEDED, FinetuneJob, FinetuneOptions
from .i18n import _
from .input_checks import InputProblem

POLL_INTERVAL_MS = 250
PROGRESS_STEPS = 1000


def loss_choices():
    """(engine name, label, one-line tooltip) for the loss selector. The tooltips say what was measured on this
    product: fine-tuning on a synthetic site (docs/FINETUNING_RESULTS.md: same cases and time for each loss) and
    the converged loss study (docs/LOSS_STUDY.md: training from scratch, 2 seeds, peak rates 1e-3 and 1e-4)."""
    return [
        ("explog", _("ExpLog"), _("ExpLog (default, the model's own loss). On a synthetic site drawn FreeSurfer's "
                                  "way, the default 8 minutes lifted the site's other scans by 1.1 Dice points on a "
                                  "CPU without AVX-512 and 1.2 with it (4 of 4 scans); on an older, easier proxy "
                                  "4.5 (GDL 4.2, WCE 4.2). In the loss study it beat WCE by 2.7-6.6 points at both "
                                  "learning rates. Add a validation case: it chooses the weights kept.")),
        ("gdl", _("GDL"), _("Generalised Dice: +4.2 points when fine-tuning the older synthetic site (ExpLog +4.5), "
                            "but trained from scratch on all 19 structures it failed (mean Dice 0.15-0.23 against "
                            "0.44-0.66 for ExpLog): its 1/volume^2 weights ignore the large structures. Prefer "
                            "ExpLog.")),
        ("wce", _("WCE"), _("Weighted cross-entropy, with label weights gentler than in training: +4.2 points on the "
                            "older synthetic site's other scans with the defaults (ExpLog +4.5); in the loss study "
                            "2.7-6.6 points below ExpLog, most on the small structures.")),
    ]


class FinetunePanel:
    def __init__(self, ui, segment_panel=None):
        self.ui = ui
        self.segment_panel = segment_panel
        self.job = None
        self.plot = None
        self.dice_node = None
        self._versions = []
        self._versions_call = None
        self._pending_segment_update = False  # an action changed the store: tell the Segment section
        self._list_again = False
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.timeout.connect(self._poll)

        ui.fineTunePairsTable.setHorizontalHeaderLabels([_("Volume"), _("Segmentation")])
        ui.fineTuneAddPairButton.clicked.connect(self.add_pair)
        ui.fineTuneRemovePairButton.clicked.connect(self.remove_pair)
        for name, label, tip in loss_choices():
            ui.fineTuneLossComboBox.addItem(label, name)
            ui.fineTuneLossComboBox.setItemData(ui.fineTuneLossComboBox.count - 1, tip, qt.Qt.ToolTipRole)
        ui.fineTuneLossComboBox.currentIndexChanged.connect(self.on_loss_changed)
        ui.fineTuneStartButton.clicked.connect(self.on_start_stop)
        ui.fineTuneContinueButton.clicked.connect(self.on_continue)
        ui.fineTuneContinueButton.setVisible(False)
        self.resumable: str | None = None  # name of the engine's unfinished run the last job left
        ui.fineTuneShowPlotButton.clicked.connect(self.show_plot)
        ui.fineTuneProgressBar.setRange(0, PROGRESS_STEPS)
        ui.fineTuneProgressBar.setVisible(False)
        ui.fineTuneVersionsList.currentRowChanged.connect(self.update_version_buttons)
        ui.fineTuneActivateButton.clicked.connect(self.on_activate)
        ui.fineTuneRevertButton.clicked.connect(self.on_revert)
        ui.fineTuneDeleteButton.clicked.connect(self.on_delete)
        self.on_loss_changed()
        self.add_pair()
        self.update_state()

    # -- pairs --------------------------------------------------------------------------------------------
    def _selector(self, node_type, tooltip):
        selector = slicer.qMRMLNodeComboBox()
        selector.nodeTypes = [node_type]
        selector.showChildNodeTypes = False  # no label maps among the volumes
        selector.noneEnabled = True
        selector.addEnabled = False
        selector.removeEnabled = False
        selector.toolTip = tooltip
        selector.setMRMLScene(slicer.mrmlScene)
        return selector

    def add_pair(self) -> None:
        table = self.ui.fineTunePairsTable
        row = table.rowCount
        table.insertRow(row)
        volume = self._selector("vtkMRMLScalarVolumeNode", _("The brain MRI of this case."))
        segmentation = self._selector("vtkMRMLSegmentationNode", _("Its corrected segmentation."))
        volume.setCurrentNode(None)
        segmentation.setCurrentNode(None)
        parameters = getattr(self.segment_panel, "parameters", None)
        if row == 0 and parameters is not None:  # the case just segmented is the likeliest first pair
            volume.setCurrentNode(parameters.inputVolume)
            segmentation.setCurrentNode(parameters.outputSegmentation)
        table.setCellWidget(row, 0, volume)
        table.setCellWidget(row, 1, segmentation)

    def remove_pair(self) -> None:
        table = self.ui.fineTunePairsTable
        row = table.currentRow() if table.currentRow() >= 0 else table.rowCount - 1
        if row >= 0:
            table.removeRow(row)

    def pairs(self) -> list:
        table = self.ui.fineTunePairsTable
        return [(table.cellWidget(r, 0).currentNode(), table.cellWidget(r, 1).currentNode())
                for r in range(table.rowCount)]

    # -- settings -----------------------------------------------------------------------------------------
    def on_loss_changed(self, index=None) -> None:
        combo = self.ui.fineTuneLossComboBox
        name, _label, tip = loss_choices()[max(combo.currentIndex, 0)]
        combo.toolTip = tip
        self.ui.fineTuneExpLogWidget.setVisible(name == "explog")

    def options(self) -> FinetuneOptions:
        ui = self.ui
        loss = loss_choices()[max(ui.fineTuneLossComboBox.currentIndex, 0)][0]
        params = {}
        if loss == "explog":
            params = {"gamma": ui.fineTuneGammaSpinBox.value, "w_dice": ui.fineTuneWDiceSpinBox.value,
                      "w_cross": ui.fineTuneWCrossSpinBox.value}
        name = ui.fineTuneNameLineEdit.text.strip() or time.strftime(f"ft-%Y%m%d-%H%M-{loss}")
        if any(v.name == name for v in self._versions):
            raise InputProblem(_("A model version named '{name}' exists already; choose another name.").format(
                name=name))
        base = self.segment_panel.current_model() if self.segment_panel is not None else None
        parameters = getattr(self.segment_panel, "parameters", None)
        device = parameters.device if parameters is not None else "auto"
        return FinetuneOptions(name, loss, params, int(ui.fineTuneStepsSpinBox.value),
                               float(ui.fineTuneLearningRateSpinBox.value), base.path if base else None, device,
                               bool(ui.fineTuneFreezeEncoderCheckBox.checked))

    # -- running ------------------------------------------------------------------------------------------
    def update_state(self) -> None:
        button = self.ui.fineTuneStartButton
        if self.job is None:
            button.text = _("Start fine-tuning")
            button.toolTip = _("Fine-tune the model selected above on these pairs, in the background. Segment "
                               "keeps working meanwhile.")
        elif self.job.stop_requested:
            button.text = _("Stop now (keep nothing)")
            button.toolTip = _("Stopping: the engine finishes its step and keeps the best validated weights. "
                               "Click to end it at once instead; nothing is then kept.")
        else:
            button.text = _("Stop")
            button.toolTip = _("Stop after the current step, keeping the best validated weights as the new "
                               "version.")
        for widget in (self.ui.fineTuneAddPairButton, self.ui.fineTuneRemovePairButton):
            widget.enabled = self.job is None
        self.ui.fineTuneContinueButton.enabled = self.job is None

    def on_start_stop(self) -> None:
        if self.job is not None:
            self.stop(force=self.job.stop_requested)
            return
        try:
            if dependencies.missing_requirements():
                if not dependencies.ensure_dependencies():
                    return
            job = FinetuneJob(self.pairs(), self.options())
            with slicer.util.WaitCursor():
                job.start()  # writes the pairs (seconds for big volumes), then starts the engine
        except (InputProblem, OSError, RuntimeError) as error:  # RuntimeError: Slicer could not export a pair
            slicer.util.errorDisplay(str(error), windowTitle=_("Cannot fine-tune"))
            return
        self._begin(job)

    def on_continue(self) -> None:
        """Continue the run the last job left unfinished (stopped, or its engine process died)."""
        if self.job is not None or not self.resumable:
            return
        parameters = getattr(self.segment_panel, "parameters", None)
        job = FinetuneJob([], FinetuneOptions(self.resumable, device=parameters.device if parameters else "auto",
                                              continue_run=True))
        try:
            job.start()
        except (InputProblem, OSError) as error:
            slicer.util.errorDisplay(str(error), windowTitle=_("Cannot continue the fine-tune"))
            return
        self._begin(job)

    def _begin(self, job) -> None:
        self.job = job
        self._start_display(job)
        self._timer.start()
        self.update_state()

    def _start_display(self, job) -> None:
        ui, name = self.ui, job.options.name
        ui.fineTuneLogText.clear()
        for note in job.notes:
            ui.fineTuneLogText.appendPlainText(note)
        ui.fineTuneProgressBar.value = 0
        ui.fineTuneProgressBar.setVisible(True)
        ui.fineTuneStatusLabel.text = _("Starting the fine-tuning engine (reading the pairs, measuring Dice "
                                        "before training)...")
        scene = slicer.mrmlScene
        self.plot = plots.TrainingPlot(scene, name)
        self.dice_node = plots.dice_table(scene, name)
        ui.fineTuneDiceTableView.setMRMLTableNode(self.dice_node)
        ui.fineTuneShowPlotButton.enabled = True
        self.show_plot()

    def show_plot(self) -> None:
        if self.plot is None or not self.plot.attached:
            return
        try:
            slicer.modules.plots.logic().ShowChartInLayout(self.plot.chart)
        except AttributeError:  # no Plots module (custom application): the nodes are still in the scene
            logging.info("SegLossBrain: no Plots module to show the training chart")

    def stop(self, force: bool = False) -> None:
        if self.job is None:
            return
        if force and not slicer.util.confirmOkCancelDisplay(
                _("End the fine-tune at once? Nothing of this run will be kept."), windowTitle=_("Stop now")):
            return
        self.job.cancel(force=force)
        self.ui.fineTuneStatusLabel.text = _("Stopping after the current step...") if not force else \
            _("Stopping...")
        self.update_state()

    def _poll(self) -> None:
        if self.job is not None:
            self._poll_job()
        if self._versions_call is not None:
            self._poll_versions()
        if self.job is None and self._versions_call is None:
            self._timer.stop()

    def _poll_job(self) -> None:
        job, ui = self.job, self.ui
        update = job.poll()
        if update.fraction is not None:
            ui.fineTuneProgressBar.value = int(update.fraction * PROGRESS_STEPS)
        if update.status and not (job.stop_requested and not update.done):
            ui.fineTuneStatusLabel.text = update.status
        for line in update.log_lines:
            ui.fineTuneLogText.appendPlainText(line)
        if self.plot is not None:
            self.plot.add_losses(update.losses)
            self.plot.add_validations(update.validations)
        if update.validations:
            self._fill_dice(job.before, job.latest)
        if update.done:
            self._finish(job)

    def _fill_dice(self, before, after) -> None:
        if self.dice_node is None or self.dice_node.GetScene() is not slicer.mrmlScene:
            return
        from .segmentation_io import label_table

        plots.fill_dice_table(self.dice_node, before, after, label_table().names[1:])

    def _finish(self, job) -> None:
        self.job = None
        # stopped by the user (the engine said so), or its process died after training had begun
        self.resumable = job.options.name if job.resumable or (job.state == FAILED and job.step > 0) else None
        self.ui.fineTuneContinueButton.setVisible(self.resumable is not None)
        self.ui.fineTuneProgressBar.setVisible(False)
        self.ui.fineTuneStatusLabel.text = job.summary()
        if job.state == SUCCEEDED:
            self._fill_dice(job.result.get("before"), job.result.get("after"))
            self.refresh_versions()
            if self.segment_panel is not None:
                self.segment_panel.use_model(None)  # the new version appears in the Segment model list
        elif job.state == FAILED:
            self.ui.fineTuneLogCollapsibleButton.collapsed = False
            slicer.util.errorDisplay(job.error or _("Fine-tuning failed."), windowTitle=_("Fine-tuning failed"),
                                     detailedText="\n".join(job.log[-200:]))
        elif job.state == CANCELLED:
            pass  # the status line says that nothing was kept
        self.update_state()

    # -- versions -----------------------------------------------------------------------------------------
    def refresh_versions(self) -> None:
        self._run_versions_call("list")

    def _run_versions_call(self, action, name=None, force: bool = False) -> None:
        if self._versions_call is not None:  # one at a time; an action ends with a fresh list anyway
            self._list_again = self._list_again or action == "list"
            return
        self._versions_call = model_versions.VersionsCall(action, name, force=force).start()
        self._set_version_buttons(False)
        self._timer.start()

    def _poll_versions(self) -> None:
        call = self._versions_call
        if not call.poll():
            return
        self._versions_call = None
        if call.error:
            self.ui.fineTuneStatusLabel.text = call.error
            if call.action != "list":
                slicer.util.errorDisplay(call.error, windowTitle=_("Model versions"))
        elif call.action == "list":
            self._show_versions(call.versions)
            if self._list_again:  # the store changed while this listing ran
                self._list_again = False
                self.refresh_versions()
            return
        else:
            self.ui.fineTuneStatusLabel.text = call.message or ""
            self._pending_segment_update = True
        self.refresh_versions()

    def _show_versions(self, versions) -> None:
        previous = [v.key for v in self._versions]
        selected = self.selected_version()
        self._versions = list(versions)
        widget = self.ui.fineTuneVersionsList
        widget.clear()
        for version in self._versions:
            widget.addItem(version.label())
        if not self._versions:
            widget.addItem(_("(no model installed yet)"))
        keys = [v.key for v in self._versions]
        if selected is not None and selected.key in keys:
            widget.currentRow = keys.index(selected.key)
        self.update_version_buttons()
        active = model_versions.active_version(self._versions)
        if self.segment_panel is None:
            return
        if self._pending_segment_update:  # activated, reverted or deleted: Segment follows the active version
            self._pending_segment_update = False
            self.segment_panel.use_model(active.key if active else None)
        elif previous and previous != keys:
            self.segment_panel.use_model(None)  # versions came or went: refresh, keep the user's choice

    def selected_version(self):
        row = self.ui.fineTuneVersionsList.currentRow
        return self._versions[row] if 0 <= row < len(self._versions) else None

    def update_version_buttons(self, row=None) -> None:
        self._set_version_buttons(self._versions_call is None)

    def _set_version_buttons(self, enabled: bool) -> None:
        version = self.selected_version()
        self.ui.fineTuneActivateButton.enabled = enabled and version is not None and not version.active
        self.ui.fineTuneDeleteButton.enabled = enabled and version is not None and version.can_delete
        self.ui.fineTuneRevertButton.enabled = enabled

    def on_activate(self) -> None:
        version = self.selected_version()
        if version is None:
            return
        force = version.worse_than_base
        if force and not slicer.util.confirmOkCancelDisplay(
                _("On its own validation case '{name}' scored worse than its base (mean Dice {before:.3f} -> "
                  "{after:.3f}). Every later segmentation would use it. Activate it anyway?").format(
                    name=version.name, before=version.dice_before, after=version.dice_after),
                windowTitle=_("Activate a worse version")):
            return
        self._run_versions_call("activate", version.name, force=force)

    def on_revert(self) -> None:
        self._run_versions_call("revert")

    def on_delete(self) -> None:
        version = self.selected_version()
        if version is None or not version.can_delete:
            return
        if slicer.util.confirmOkCancelDisplay(_("Delete the model version '{name}'? This cannot be undone.").format(
                name=version.name), windowTitle=_("Delete version")):
            self._run_versions_call("delete", version.name)

    # -- life cycle ---------------------------------------------------------------------------------------
    def on_scene_closing(self) -> None:
        """The chart and the Dice table leave with the scene (a running fine-tune goes on: it reads its files)."""
        self.plot, self.dice_node = None, None
        self.ui.fineTuneDiceTableView.setMRMLTableNode(None)
        self.ui.fineTuneShowPlotButton.enabled = False

    def cleanup(self) -> None:
        """Module reloaded or Slicer closing: never leave a child process behind."""
        self._timer.stop()
        if self.job is not None:
            self.job.abandon()
            self.job = None
        if self._versions_call is not None:
            self._versions_call.cancel()
            self._versions_call = None
