"""A cohort to files: a labelmap per case in the output folder and the one volumes table, resumable.

Each case's outputs are written into ``DIR/.partial/`` first, its row is then written to the table, and only
then are the outputs renamed into ``DIR``: a labelmap in ``DIR`` always has its row, so a labelmap without one
is someone else's file and is never replaced without ``--overwrite``. A re-run skips every case whose row is
ok, for the same input file and the same model (sha256), and whose labelmap is there.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .. import __version__
from ..evaluation.volumes import intracranial_volume_ml
from ..imageio.content import label_map_reason
from ..imageio.dicomseg import check_dicom_seg_request, check_series_input, summarise_notes, write_dicom_seg
from ..imageio.discovery import Case, discover_cases
from ..imageio.volumes import InputError, read_image, write_image
from . import cohort_table as tables
from .cohort import (CaseResult, LoadedModel, Worker, check_options, load_cohort_model, model_sha256, one_line,
                     segment_many)

FORMATS = {"nii.gz": (".nii.gz", ".nii.gz"), "nrrd": (".nrrd", ".nrrd"), "seg.nrrd": (".seg.nrrd", ".nrrd")}
PARTIAL = ".partial"
_OUTPUT_KINDS = ("_labels", "_confidence")
DICOM_SEG_SUFFIX = "_seg.dcm"


@dataclass
class CohortOptions:
    output_dir: Path
    model: object = None
    device: str = "auto"
    tta: bool = False
    with_confidence: bool = False
    island_fraction: float = 0.0
    pial_refinement: bool = True  # the cortex's outer boundary decided at the input's resolution
    format: str = "nii.gz"
    overwrite: bool = False
    force: bool = False  # segment cases in which no brain is found (an error row otherwise)
    hemispheres: bool = False  # labelmaps of FreeSurfer aseg values, left/right columns in the table
    output_spacing: float | None = None  # labels (and confidence) on an isotropic grid of this many mm
    dicom_seg: bool = False  # a DICOM SEG beside each labelmap; a case that is no DICOM series is an error
    precision: str = "auto"  # autocast: auto (bf16 where native), fp32 or bf16
    engine: str = "auto"  # what runs the network: auto (OpenVINO on a CPU when installed), openvino or torch

    @property
    def settings(self) -> str:
        """What shapes the outputs beyond the model, recorded in each row: a re-run skips only the cases done
        with the same settings (a labelmap without left/right is no result for a run that asks for them)."""
        return "; ".join(([] if not self.hemispheres else ["hemispheres"])
                         + ([] if self.output_spacing is None else [f"output_spacing {self.output_spacing:g} mm"])
                         + ([] if not self.dicom_seg else ["dicom_seg"]))

    def check(self) -> None:
        """Option combinations that cannot work, refused before any work (InputError)."""
        check_options(self.output_spacing, self.hemispheres)
        if self.dicom_seg:
            check_dicom_seg_request(self.output_spacing)


@dataclass
class CohortSummary:
    cases: int = 0  # in this worker's share
    done: int = 0
    skipped: int = 0
    failed: list = field(default_factory=list)  # case ids
    table: Path | None = None

    @property
    def all_ok(self) -> bool:
        return not self.failed


def output_names(case: Case, options: CohortOptions) -> dict[str, str]:
    labels_suffix, confidence_suffix = FORMATS[options.format]
    names = {"labels": case.case_id + "_labels" + labels_suffix}
    if options.with_confidence:
        names["confidence"] = case.case_id + "_confidence" + confidence_suffix
    if options.dicom_seg:
        names["dicom_seg"] = case.case_id + DICOM_SEG_SUFFIX
    return names


def prepare_output_dir(output_dir: Path) -> Path:
    """Create ``output_dir`` and prove it writable, or an InputError naming the fix."""
    try:
        (output_dir / PARTIAL).mkdir(parents=True, exist_ok=True)
        probe = output_dir / PARTIAL / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise InputError(f"output folder {output_dir} cannot be created or written ({error.strerror or error}); "
                         "choose another --output-dir") from None
    return output_dir


def find_cases(inputs: list, output_dir: Path, force: bool = False, skipped: list | None = None) -> list[Case]:
    """The cohort's cases; a folder search leaves out this output folder's own labelmaps and confidences, the
    folder itself (its DICOM SEG files are no series to segment) and, unless ``force``, files whose content
    looks like a label map or mask (a FreeSurfer subject's aseg, a brain mask), which go to ``skipped``."""
    resolved = output_dir.resolve()
    skipped = [] if skipped is None else skipped

    def leave_out(path: Path) -> bool:
        if path.resolve() == resolved or (path.parent.resolve() == resolved
                                          and any(k in path.name for k in _OUTPUT_KINDS)):
            return True
        if not force and path.is_file() and _looks_like_labels(path):
            skipped.append(path)
            return True
        return False

    try:
        return discover_cases(inputs, skip=leave_out)
    except InputError as error:
        if not skipped:
            raise
        raise InputError(f"{error} ({len(skipped)} file(s) left out as label maps or masks, e.g. {skipped[0]}; "
                         "pass --force to segment them)") from None


def plan(cases: list[Case], rows: dict, options: CohortOptions, sha256: str) -> tuple[list[Case], list[Case]]:
    """(cases to do, cases already done with the model of this ``sha256``). Refuses, before any work, outputs
    that would overwrite an input or a file this cohort did not write for the same input."""
    inputs = {case.path.resolve() for case in cases}
    to_do, skipped, conflicts = [], [], []
    for case in cases:
        paths = [options.output_dir / name for name in output_names(case, options).values()]
        if any(p.resolve() in inputs for p in paths):
            raise InputError(f"the output {paths[0]} would overwrite an input; choose another --output-dir")
        row = rows.get(case.case_id)
        same_input = row is not None and row.get("input") == str(case.path)
        if not options.overwrite and paths[0].exists() and not same_input:
            conflicts.append(str(paths[0]))
        elif (same_input and row.get("status") == "ok" and row.get("model_sha256") == sha256
              and row.get("settings", "") == options.settings and all(p.exists() for p in paths)
              and not options.overwrite):
            skipped.append(case)
        else:
            to_do.append(case)
    if conflicts:
        more = f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else ""
        raise InputError(f"{', '.join(conflicts[:3])}{more} already exist and were not written by this cohort for the "
                         "same input; pass --overwrite to replace them, or choose another --output-dir")
    return to_do, skipped


def case_row(outcome: CaseResult, loaded: LoadedModel, labels_name: str, settings: str = "") -> dict:
    row = {"case_id": outcome.case.case_id, "input": str(outcome.case.path), "status": outcome.status,
           "reason": outcome.reason, "seconds": f"{outcome.seconds:.2f}", "model": loaded.name,
           "model_sha256": loaded.sha256, "labels": labels_name if outcome.ok else "", "settings": settings,
           "finished": datetime.now(timezone.utc).isoformat(timespec="microseconds")}
    if outcome.ok:
        volumes = outcome.result.volumes_ml
        row.update({tables.structure_column(name): f"{value:.3f}" for name, value in volumes.items()})
        row.update(tables.side_cells(outcome.result.side_volumes_ml))
        row[tables.ICV_COLUMN] = f"{intracranial_volume_ml(volumes):.3f}"
        quality = outcome.result.quality
        if quality is not None:  # whole-result warnings, then flagged structures
            row["qc"] = "; ".join(quality.warnings + [f"{name}: {flag}" for name, flag in quality.flags.items()])
    return row


def run_cohort(inputs: list, options: CohortOptions, worker: Worker = Worker(),
               on_event: Callable[[dict], None] | None = None) -> CohortSummary:
    """Segment this worker's share of the cohort into ``options.output_dir`` and update the volumes table."""
    emit = on_event or (lambda event: None)
    options.check()
    options.output_dir = Path(options.output_dir).expanduser()
    left_out: list[Path] = []
    cases = find_cases(inputs, options.output_dir, options.force, left_out)
    mine = worker.take(cases)
    to_do, skipped = plan(mine, tables.all_rows(options.output_dir), options, model_sha256(options.model))
    prepare_output_dir(options.output_dir)  # only now: a refused run leaves no folder behind
    own_table = options.output_dir / tables.part_name(worker.index, worker.count)
    # The only worker owns volumes.csv and keeps every row in it; a part table holds its own worker's rows.
    rows = tables.all_rows(options.output_dir) if worker.count == 1 else tables.read_table(own_table)
    summary = CohortSummary(cases=len(mine), skipped=len(skipped), table=options.output_dir / tables.TABLE_NAME)
    if left_out:
        emit({"event": "left_out", "paths": [str(p) for p in left_out],
              "reason": "their content looks like a label map or mask (few distinct integer values)"})
    emit({"event": "cohort_start", "cases": len(cases), "mine": len(mine), "to_do": len(to_do),
          "skipped": len(skipped), "worker": worker.index, "workers": worker.count})
    order = [c.case_id for c in cases]
    if to_do:
        loaded = load_cohort_model(options.model, options.device, options.engine, options.precision)
        emit({"event": "model", "name": loaded.name, "sha256": loaded.sha256, "device": str(loaded.device),
              "engine": loaded.engine,
              "status": loaded.metadata.get("status"), "status_note": loaded.metadata.get("status_note")})
        started = time.perf_counter()
        # With --dicom-seg a case that is no DICOM series is refused before its turn; the others still run.
        refused = [_not_a_series(case) for case in to_do] if options.dicom_seg else [None] * len(to_do)
        runnable = [case for case, reason in zip(to_do, refused) if reason is None]
        segmented = segment_many(runnable, tta=options.tta, with_confidence=options.with_confidence,
                                 island_fraction=options.island_fraction, force=options.force, loaded=loaded,
                                 output_spacing=options.output_spacing, hemispheres=options.hemispheres,
                                 precision=options.precision, pial_refinement=options.pial_refinement)
        outcomes = (CaseResult(case, "error", reason) if reason else next(segmented)
                    for case, reason in zip(to_do, refused))
        for number, outcome in enumerate(outcomes, start=1):
            outcome = _write_case(outcome, loaded, options, rows, own_table, order, emit)
            summary.done += 1
            if not outcome.ok:
                summary.failed.append(outcome.case.case_id)
            elapsed = time.perf_counter() - started
            emit({"event": "case", "case_id": outcome.case.case_id, "status": outcome.status,
                  "reason": outcome.reason, "seconds": round(outcome.seconds, 2), "done": number, "total": len(to_do),
                  "eta_s": round(elapsed / number * (len(to_do) - number), 1)})
    elif worker.count == 1:  # nothing to do: still one table, with any part tables of earlier split runs merged
        tables.write_table(own_table, tables.ordered(rows, order))
    _finish_tables(worker, options.output_dir, order)
    try:
        (options.output_dir / PARTIAL).rmdir()  # only when empty: another worker may still be writing there
    except OSError:
        pass
    emit({"event": "cohort_end", "done": summary.done, "skipped": summary.skipped, "failed": len(summary.failed),
          "table": str(summary.table)})
    return summary


def _write_case(outcome: CaseResult, loaded: LoadedModel, options: CohortOptions, rows: dict,
                own_table: Path, order: list[str], emit: Callable[[dict], None] = lambda event: None) -> CaseResult:
    """Outputs to .partial/, the row to the table, outputs into place; a failed write is the case's error."""
    names = output_names(outcome.case, options)
    partial = options.output_dir / PARTIAL
    written: list[str] = []
    header = {"SegLossBrain_Model": loaded.name, "SegLossBrain_ModelSha256": loaded.sha256,
              "SegLossBrain_Version": __version__}  # the model that made each file, where the format keeps it
    notes: list = []
    try:
        if outcome.ok:
            labels = outcome.result.sided_labels if options.hemispheres else outcome.result.labels
            write_image(labels, partial / names["labels"], hemispheres=options.hemispheres, header=header)
            written.append("labels")
            if options.with_confidence:
                write_image(outcome.result.confidence, partial / names["confidence"], header=header)
                written.append("confidence")
            if options.dicom_seg:
                write_dicom_seg(labels, outcome.case.path, partial / names["dicom_seg"], options.hemispheres,
                                __version__, model={"name": loaded.name, "sha256": loaded.sha256}, notes=notes)
                written.append("dicom_seg")
    except Exception as error:  # disk full, quota, a series SEG cannot describe: this case fails, the cohort goes on
        outcome = CaseResult(outcome.case, "error", "writing outputs: " + one_line(error), outcome.seconds)
    if summarise_notes(notes):
        emit({"event": "note", "case_id": outcome.case.case_id, "message": summarise_notes(notes)})
    rows[outcome.case.case_id] = case_row(outcome, loaded, names["labels"], options.settings)
    tables.write_table(own_table, tables.ordered(rows, order))
    for kind in written:
        if outcome.ok:
            os.replace(partial / names[kind], options.output_dir / names[kind])
        else:
            (partial / names[kind]).unlink(missing_ok=True)
    return outcome


def _looks_like_labels(path: Path) -> bool:
    """True for a file whose content looks like a label map or mask; False too for one that cannot be read: its
    case then says why."""
    try:
        return label_map_reason(read_image(path)) is not None
    except Exception:
        return False


def _not_a_series(case: Case) -> str | None:
    """Why ``case`` cannot get a DICOM SEG (the one-line reason of its error row), or None."""
    try:
        check_series_input(case.path)
    except InputError as error:
        return one_line(error)
    return None


def _finish_tables(worker: Worker, output_dir: Path, order: list[str]) -> None:
    if worker.count == 1:
        return
    if worker.distributed:
        import torch.distributed as dist

        dist.barrier()  # every rank has written its part table
        if dist.get_rank() == 0:  # with --shard too, the part tables of other shards stay for their own merge
            tables.merge_tables(output_dir, order, remove_parts=worker.count == dist.get_world_size())
        dist.barrier()  # no rank reports the table before it is whole
    else:
        tables.merge_tables(output_dir, order)
