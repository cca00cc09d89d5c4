"""``seglossbrain batch``: a cohort in one command, one labelmap per case and one volumes table out; split across
torchrun ranks or a scheduler's job array (``--shard K/N``)."""
from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

from .common import (EXIT_FAILURE, EXIT_OK, Reporter, add_engine_option, add_model_options, add_output_options,
                     log_model_status)

# A rank that finishes early waits at the final barrier for the slowest; cohorts run for hours.
_BARRIER_TIMEOUT = timedelta(hours=72)


class CaseBar:
    """The cohort's events as one tqdm bar over cases (with ETA) and a line per failed case, or as JSON lines."""

    def __init__(self, reporter: Reporter, label: str):
        self.reporter, self.label, self.bar = reporter, label, None

    def __call__(self, event: dict) -> None:
        if self.reporter.json_lines:
            self.reporter.emit(**event)
            return
        kind = event["event"]
        if kind == "cohort_start":
            self.reporter.log(f"{self.label}{event['mine']} of {event['cases']} cases: {event['skipped']} done "
                              f"before (same input, model and settings), {event['to_do']} to segment")
        elif kind == "model":
            self.reporter.log(f"{self.label}model {event['name']} (sha256 {event['sha256'][:12]}...) on "
                              f"{event['device']}")
            log_model_status(event, self.reporter)
        elif kind == "left_out":
            paths = event["paths"]
            more = f" and {len(paths) - 10} more" if len(paths) > 10 else ""
            self.reporter.log(f"{self.label}left out {len(paths)} file(s) whose content looks like a label map or "
                              f"mask (pass --force to segment them): {', '.join(paths[:10])}{more}")
        elif kind == "note":
            self.reporter.log(f"{event['case_id']}: note: {event['message']}")
        elif kind == "case":
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=event["total"], file=sys.stderr, unit="case", desc=self.label.strip(": ") or None)
            self.bar.set_postfix_str(f"{event['case_id']} {event['status']} {event['seconds']:.1f}s")
            self.bar.update(1)
            if event["status"] != "ok":
                self.bar.write(f"{event['case_id']}: error: {event['reason']}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run_batch(args, reporter: Reporter) -> int:
    from ..inference.cohort import parse_shard, worker_device, worker_from_environment
    from ..inference.cohort_run import CohortOptions, run_cohort

    worker = worker_from_environment(parse_shard(args.shard) if args.shard else None)
    device = worker_device(worker, args.device)
    if worker.distributed:
        import torch.distributed as dist

        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=_BARRIER_TIMEOUT)
    options = CohortOptions(Path(args.output_dir), model=args.model, device=device, tta=args.tta,
                            with_confidence=args.confidence, island_fraction=args.remove_islands,
                            pial_refinement=args.pial_refinement,
                            format=args.format, overwrite=args.overwrite, force=args.force,
                            hemispheres=args.hemispheres, output_spacing=args.output_spacing,
                            dicom_seg=args.dicom_seg, precision=args.precision,
                            engine=args.engine)
    label = f"worker {worker.index + 1}/{worker.count}: " if worker.count > 1 else ""
    bar = CaseBar(reporter, label)
    try:
        summary = run_cohort(args.inputs, options, worker, on_event=bar)
    finally:
        bar.close()
        if worker.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    if not reporter.json_lines:
        failed = f", {len(summary.failed)} failed ({', '.join(summary.failed[:10])})" if summary.failed else ""
        print(f"{label}{summary.cases} cases: {summary.done - len(summary.failed)} segmented, {summary.skipped} done "
              f"before{failed}; table {summary.table}")
    return EXIT_OK if summary.all_ok else EXIT_FAILURE


def add_batch_command(commands) -> None:
    batch = commands.add_parser(
        "batch", help="segment a cohort: one labelmap per case and one volumes table (volumes.csv)",
        description="Inputs: volume files, DICOM series folders, folders to search recursively, or .txt/.csv lists "
                    "of paths. Exit code 0 when every case succeeded, 1 when some failed (see the table's status "
                    "column), 2 on bad input. Re-running skips cases already done with the same model.")
    batch.add_argument("inputs", nargs="+", metavar="INPUT",
                       help="volume files, DICOM series folders, folders to search recursively, .txt/.csv lists")
    batch.add_argument("--output-dir", required=True, help="labelmaps CASE_labels.FORMAT and volumes.csv go here")
    batch.add_argument("--format", default="nii.gz", choices=["nii.gz", "nrrd", "seg.nrrd"],
                       help="labelmap format (seg.nrrd: Slicer segmentation with named, coloured, coded segments)")
    batch.add_argument("--confidence", action="store_true", help="also write CASE_confidence (max class probability)")
    batch.add_argument("--overwrite", action="store_true", help="redo cases already done and replace their outputs")
    batch.add_argument("--force", action="store_true",
                       help="segment cases in which no brain is found and files that look like label maps or masks "
                            "(otherwise a folder search leaves those files out, listing them, and a case named "
                            "directly gets an error row saying so)")
    add_output_options(batch)
    batch.add_argument("--dicom-seg", action="store_true",
                       help="also write CASE_seg.dcm, a DICOM Segmentation referencing the case's DICOM series; a "
                            "case that is not a DICOM series folder gets an error row")
    batch.add_argument("--shard", metavar="K/N", help="segment only the K-th of N shares of the cases (1 <= K <= N), "
                       "for a scheduler's job array; every shard merges the one table when it ends")
    add_model_options(batch)
    add_engine_option(batch)
    batch.set_defaults(handler=run_batch)
