"""One segmentation as the scene sees it: input volume node in, segmentation + volumes table (+ confidence) out.

The scene is touched only in :meth:`SegmentRun.finish` after every output file has been read and checked, so
cancelling, a crash or a bad output leaves the scene exactly as it was. Needs no Qt: the widget polls.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import confidence as confidence_stats
from .cli_protocol import SegmentOptions
from .i18n import _
from .input_checks import (InputProblem, check_input_volume, check_model_file, check_output_spacing,
                           check_still_in_scene)
from .segment_job import CANCELLED, RUNNING, SUCCEEDED, JobUpdate, SegmentJob
from .segmentation_io import label_table, labels_to_segmentation
from .subject_hierarchy import place_with_input
from .volume_files import (image_from_array, ijk_to_ras, isotropic_grid_node, read_on_grid, set_ijk_to_ras,
                           voxel_volume_mm3, write_volume)
from .volume_table import fill_volumes_table, side_volumes, structure_volumes


class SegmentError(RuntimeError):
    """The run failed; the message is for the user, ``log`` holds the child's output."""

    def __init__(self, message: str, log: list[str] | None = None):
        super().__init__(message)
        self.log = log or []


@dataclass
class SegmentResult:
    segmentation: object
    volumes_table: object
    confidence_volume: object | None
    volumes: list
    lowest_confidence: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    qc_flags: dict = field(default_factory=dict)  # structure name -> why the engine's QC flags it


class SegmentRun:
    def __init__(self, scene, input_volume, options: SegmentOptions, output_segmentation=None,
                 volumes_table=None, confidence_volume=None, model_sha256=None, command_prefix=None, env=None):
        self.scene = scene
        self.input_volume = input_volume
        self.output_segmentation = output_segmentation
        self.volumes_table = volumes_table
        self.confidence_volume = confidence_volume
        self.notes = check_input_volume(input_volume)  # raises InputProblem before anything else happens
        spacing = check_output_spacing(input_volume, options.output_spacing)
        self.options = replace(options, output_spacing=spacing)  # 0 (the input's own grid) goes as no option
        # The grid the engine's outputs come back on: the input's own, or the engine's isotropic output grid.
        self.grid = input_volume if spacing is None else isotropic_grid_node(input_volume, spacing)
        if options.model_path:
            check_model_file(options.model_path, model_sha256)
        self._command_prefix = command_prefix
        self._env = env
        self.workdir: Path | None = None
        self.job: SegmentJob | None = None

    # -- running ------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="SegLossBrain-"))
        input_path = self.workdir / "input.nrrd"
        try:
            write_volume(self.input_volume, input_path)
        except OSError:
            self._cleanup()
            raise
        confidence_path = self.workdir / "confidence.nrrd" if self.options.confidence else None
        self.job = SegmentJob(input_path, self.workdir / "labels.nrrd", self.options, confidence_path,
                              command_prefix=self._command_prefix, env=self._env)
        self.job.start()

    def poll(self) -> JobUpdate:
        return self.job.poll() if self.job else JobUpdate(done=True)

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.state == RUNNING

    @property
    def log(self) -> list[str]:
        return self.job.log if self.job else []

    def cancel(self) -> None:
        if self.job:
            self.job.cancel()

    def abandon(self) -> None:
        """Kill the child at once and remove its files (module reloaded, Slicer closing): nobody polls again."""
        if self.job:
            self.job.cancel(force=True)
            try:
                self.job.wait(timeout=2.0)
            except TimeoutError:
                pass
        self._cleanup()

    def wait(self, timeout: float | None = None) -> None:
        self.job.wait(timeout)

    # -- results ------------------------------------------------------------------------------------------
    def finish(self) -> SegmentResult | None:
        """Call once poll() said done. None when cancelled; SegmentError when the run failed."""
        try:
            if self.job is None or self.job.state == CANCELLED:
                return None
            if self.job.state != SUCCEEDED:
                raise SegmentError(self.job.error or _("Segmentation failed."), self.job.log)
            return self._apply()
        finally:
            self._cleanup()

    def _apply(self) -> SegmentResult:
        try:
            check_still_in_scene(self.scene, self.input_volume, _("input volume"))
            labels = read_on_grid(self.job.output_path, self.grid, label=True)
            confidence = None
            if self.job.confidence_path is not None and self.job.confidence_path.is_file():
                confidence = read_on_grid(self.job.confidence_path, self.grid, label=False)
        except (InputProblem, OSError, ValueError) as error:
            raise SegmentError(str(error), self.job.log) from error
        table = label_table()
        hemispheres = self.options.hemispheres
        sided = labels
        if hemispheres:  # FreeSurfer aseg values; the volumes, confidence and fine-tuning read merged structures
            labels = table.map_freesurfer(sided)
        elif labels.size and labels.max() >= table.num_classes:
            raise SegmentError(_("The engine wrote label values above {last}; the label table and the model do "
                                 "not match.").format(last=table.num_classes - 1), self.job.log)
        engine_result = self.job.result or {}

        created = []  # nodes this run added, removed again if building the results fails half way
        try:
            segmentation = self._reuse_or_add(self.output_segmentation, "vtkMRMLSegmentationNode",
                                              _("{volume} segmentation"), created)
            labels_to_segmentation(sided, self.input_volume, segmentation, table, hemispheres, grid=self.grid)
            volumes = structure_volumes(labels, voxel_volume_mm3(self.grid), table)
            means = None
            lowest = []
            confidence_node = None
            if confidence is not None:
                means = confidence_stats.mean_confidence(labels, confidence, table.num_classes)
                lowest = confidence_stats.lowest_confidence(labels, confidence, table)
                confidence_node = self._reuse_or_add(self.confidence_volume, "vtkMRMLScalarVolumeNode",
                                                     _("{volume} confidence"), created)
                self._fill_confidence(confidence_node, confidence)
            table_node = self._reuse_or_add(self.volumes_table, "vtkMRMLTableNode",
                                            _("{volume} structure volumes"), created)
            sides = side_volumes(sided, voxel_volume_mm3(self.grid), table) if hemispheres else None
            fill_volumes_table(table_node, volumes, means, sides, engine_result.get("qc", {}))
            place_with_input(self.scene, self.input_volume, segmentation, table_node, confidence_node)
        except Exception:
            for node in created:
                self.scene.RemoveNode(node)
            raise
        notes = list(self.notes) + [_("Warning: {text}").format(text=w) for w in engine_result.get("warnings", [])]
        if self.job.fell_back_to_cpu:
            notes.append(_("The GPU ran out of memory, so this segmentation was computed on the CPU."))
        return SegmentResult(segmentation, table_node, confidence_node, volumes, lowest, notes,
                             dict(engine_result.get("qc", {})))

    def _reuse_or_add(self, node, class_name: str, name_pattern: str, created: list):
        if node is not None and node.GetScene() is self.scene and self.scene.GetNodeByID(node.GetID()) is node:
            return node
        node = self.scene.AddNewNodeByClass(class_name, name_pattern.format(volume=self.input_volume.GetName()))
        created.append(node)
        return node

    def _fill_confidence(self, node, confidence) -> None:
        import numpy as np

        node.SetAndObserveImageData(image_from_array(confidence.astype(np.float32)))
        set_ijk_to_ras(node, ijk_to_ras(self.grid))
        node.SetAndObserveTransformNodeID(self.input_volume.GetTransformNodeID())
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        if display is not None:
            display.AutoWindowLevelOff()
            display.SetWindowLevelMinMax(0.0, 1.0)  # probabilities: a fixed scale compares runs fairly

    def _cleanup(self) -> None:
        if self.workdir is not None and (self.job is None or not self.job.child_running):
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def run_blocking(self, timeout: float | None = None) -> SegmentResult | None:
        """start + wait + finish, for the self-test and scripts."""
        self.start()
        self.wait(timeout)
        return self.finish()
