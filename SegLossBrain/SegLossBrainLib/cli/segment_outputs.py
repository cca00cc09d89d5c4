"""What ``segment`` writes, once the segmentation is done: the labelmap first, then each optional output (confidence,
probabilities, volumes, DICOM SEG) on its own. One output that fails (a full disk, a series a SEG cannot describe)
never takes the others with it: each finished file stays, and the command ends with exit 1 naming what was
written and what was not. Every file is written whole or not at all (``imageio.atomic``)."""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from ..imageio.atomic import open_atomic
from ..imageio.outputs import (DICOM_FORMATS, IMAGE_FORMATS, LABELMAP_FORMATS, TABLE_FORMATS, Output,
                               check_outputs)

MODEL_HEADER = "SegLossBrain_Model"  # NRRD/MHA header fields naming the model that made a file
MODEL_SHA256_HEADER = "SegLossBrain_ModelSha256"


def requested_outputs(args) -> list[Output]:
    """Every output ``args`` asks for, labelmap first, with the formats each may have."""
    wanted = [("output", args.output, LABELMAP_FORMATS), ("--confidence", args.confidence, IMAGE_FORMATS),
              ("--probabilities", args.probabilities, IMAGE_FORMATS), ("--volumes", args.volumes, TABLE_FORMATS),
              ("--dicom-seg", args.dicom_seg, DICOM_FORMATS + ("",))]
    return [Output(option, Path(path), formats) for option, path, formats in wanted if path]


def check_requested_outputs(args) -> None:
    """All of them, before any work (``imageio.outputs``)."""
    check_outputs(requested_outputs(args), inputs=[args.input], overwrite=args.overwrite)


@dataclass
class Written:
    written: list = field(default_factory=list)  # "option path"
    failed: list = field(default_factory=list)  # "option path (reason)"
    notes: list = field(default_factory=list)  # one-line notes for the log (the DICOM libraries' warnings)

    def message(self) -> str:
        done = "; ".join(self.written) or "nothing"
        return f"could not write {'; '.join(self.failed)}. Written: {done}"


def write_outputs(args, result, model: dict) -> Written:
    """Write every requested output of ``result``; none is given up because another failed."""
    from .. import __version__
    from ..imageio.volumes import write_image

    labels = result.sided_labels if args.hemispheres else result.labels
    header = {MODEL_HEADER: model.get("name", ""), MODEL_SHA256_HEADER: model.get("sha256", ""),
              "SegLossBrain_Version": __version__}
    steps = [("output", args.output, lambda: write_image(labels, args.output, hemispheres=args.hemispheres,
                                                         header=header))]
    if args.confidence:
        steps.append(("--confidence", args.confidence, lambda: write_image(result.confidence, args.confidence,
                                                                           header=header)))
    if args.probabilities:
        steps.append(("--probabilities", args.probabilities, lambda: _write_probabilities(result, args.probabilities)))
    if args.volumes:
        steps.append(("--volumes", args.volumes, lambda: write_volumes_csv(result, args.volumes, model)))
    outcome = Written()
    if args.dicom_seg:
        steps.append(("--dicom-seg", args.dicom_seg, lambda: _write_dicom_seg(args, labels, model, outcome.notes)))
    for option, path, write in steps:
        try:
            write()
        except Exception as error:  # this output is lost; the ones written stay, the others are still tried
            reason = " ".join(str(error).split()) or type(error).__name__
            outcome.failed.append(f"{option} {path} ({reason})")
        else:
            outcome.written.append(f"{option} {path}")
    return outcome


def _write_dicom_seg(args, labels, model: dict, notes: list) -> None:
    from .. import __version__
    from ..imageio.dicomseg import summarise_notes, write_dicom_seg

    caught: list = []
    try:
        write_dicom_seg(labels, args.input, args.dicom_seg, args.hemispheres, __version__, model=model, notes=caught)
    finally:
        summary = summarise_notes(caught)
        if summary:
            notes.append(summary)


def _write_probabilities(result, path) -> None:
    import SimpleITK as sitk

    from ..imageio.volumes import write_image

    # On the network grid (its geometry is in the header): on a 1 mm input grid 20 float channels
    # would take over a gigabyte.
    array = result.probabilities.permute(1, 2, 3, 0).numpy()
    vector = sitk.GetImageFromArray(array, isVector=True)
    reference = result.network_grid.reference_image()
    vector.SetOrigin(reference.GetOrigin())
    vector.SetSpacing(reference.GetSpacing())
    vector.SetDirection(reference.GetDirection())
    write_image(vector, path)


def write_volumes_csv(result, path, model: dict) -> None:
    """One row per structure: volume, QC flag and, with left/right, each side's volume and the asymmetry index
    (L - R) / ((L + R) / 2); every row names the model (``model``, ``model_sha256``, as ``batch``'s table)."""
    from ..postprocessing.hemispheres import SIDE_COLUMNS, side_cells

    sides = result.side_volumes_ml
    flags = result.quality.flags if result.quality else {}
    with open_atomic(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["structure", "volume_ml"] + (list(SIDE_COLUMNS) if sides else [])
                        + ["qc", "model", "model_sha256"])
        for name, value in result.volumes_ml.items():
            row = [name, f"{value:.3f}"] + (side_cells(sides, name) if sides else [])
            writer.writerow(row + [flags.get(name, ""), model.get("name", ""), model.get("sha256", "")])
