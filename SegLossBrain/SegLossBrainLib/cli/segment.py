"""``seglossbrain segment``, ``demo`` and ``info``: a volume in, a labelmap (and volumes, confidence,
probabilities) out; the embedded demo volume; what is installed."""
from __future__ import annotations

import csv
import os
from pathlib import Path

from ..imageio.atomic import open_atomic
from .common import EXIT_OK, Reporter, add_model_options, add_output_options, log_model_status


def _write_volumes_csv(result, path: Path) -> None:
    """One row per structure: volume, QC flag and, with left/right, each side's volume and the asymmetry index
    (L - R) / ((L + R) / 2)."""
    from ..postprocessing.hemispheres import SIDE_COLUMNS, side_cells

    sides = result.side_volumes_ml
    flags = result.quality.flags if result.quality else {}
    with open_atomic(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["structure", "volume_ml"] + (list(SIDE_COLUMNS) if sides else []) + ["qc"])
        for name, value in result.volumes_ml.items():
            row = [name, f"{value:.3f}"] + (side_cells(sides, name) if sides else [])
            writer.writerow(row + [flags.get(name, "")])


def _check_output_path(path: Path) -> None:
    from ..imageio.volumes import InputError

    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"output folder {folder} does not exist; create it or choose another output path")
    if not os.access(folder, os.W_OK):
        raise InputError(f"output folder {folder} is not writable; choose another output path")


def _check_request(args) -> None:
    """Option combinations that cannot work, refused before any work."""
    from ..imageio.dicomseg import check_dicom_seg_request, check_series_input

    if args.dicom_seg:
        check_series_input(args.input)
        check_dicom_seg_request(args.output_spacing)


def run_segment(args, reporter: Reporter) -> int:
    from ..imageio.volumes import read_image
    from ..inference.segment import segment

    _check_request(args)
    outputs = [Path(args.output)] + [Path(p) for p in (args.probabilities, args.confidence, args.volumes,
                                                       args.dicom_seg) if p]
    for path in outputs:  # fail before an hour of work, not after
        _check_output_path(path)
    image = read_image(args.input)
    result = segment(image, model=args.model, device=args.device, tta=args.tta,
                     island_fraction=args.remove_islands,
                     return_probabilities=bool(args.probabilities), with_confidence=bool(args.confidence),
                     progress=reporter.progress, output_spacing=args.output_spacing,
                     hemispheres=args.hemispheres, force=args.force)
    reporter.close()
    log_model_status(result.model_metadata, reporter)
    for warning in result.quality.warnings:
        reporter.log(f"warning: {warning}")
    written: list[Path] = []
    try:
        _write_outputs(args, result, written)
    except BaseException:
        for path in written:  # all outputs or none
            path.unlink(missing_ok=True)
        raise
    flags = result.quality.flags
    if reporter.json_lines:
        reporter.emit("result", output=str(args.output), confidence=args.confidence, volumes_ml=result.volumes_ml,
                      side_volumes_ml=result.side_volumes_ml, qc=flags, warnings=result.quality.warnings,
                      hemispheres=bool(args.hemispheres))
    else:
        print(f"labels written to {args.output} (device {result.device})")
        for name, value in result.volumes_ml.items():
            sides = result.side_volumes_ml.get(name)
            side_text = f"  (L {sides[0]:8.2f}, R {sides[1]:8.2f})" if sides else ""
            print(f"  {name:28s} {value:9.2f} mL{side_text}{'  QC: ' + flags[name] if name in flags else ''}")
    return EXIT_OK


def _write_outputs(args, result, written: list) -> None:
    import SimpleITK as sitk

    from ..imageio.volumes import write_image

    labels = result.sided_labels if args.hemispheres else result.labels
    written.append(write_image(labels, args.output, hemispheres=args.hemispheres))
    if args.confidence:
        written.append(write_image(result.confidence, args.confidence))
    if args.probabilities:
        # On the network grid (its geometry is in the header): on a 1 mm input grid 20 float channels
        # would take over a gigabyte.
        array = result.probabilities.permute(1, 2, 3, 0).numpy()
        vector = sitk.GetImageFromArray(array, isVector=True)
        reference = result.network_grid.reference_image()
        vector.SetOrigin(reference.GetOrigin())
        vector.SetSpacing(reference.GetSpacing())
        vector.SetDirection(reference.GetDirection())
        written.append(write_image(vector, args.probabilities))
    if args.volumes:
        _write_volumes_csv(result, args.volumes)
        written.append(Path(args.volumes))
    if args.dicom_seg:
        from .. import __version__
        from ..imageio.dicomseg import write_dicom_seg

        written.append(write_dicom_seg(labels, args.input, args.dicom_seg, args.hemispheres, __version__))


def run_info(args, reporter: Reporter) -> int:
    import torch

    from .. import __version__
    from ..device import select_device
    from ..labels import load_label_table
    from ..models.store import list_models
    from ..paths import user_model_store

    table = load_label_table()
    print(f"SegLossBrain {__version__}, torch {torch.__version__}, device auto -> {select_device('auto').type}")
    print(f"label table {table.path} (version {table.version}):")
    for s in table.structures:
        print(f"  {s.index:2d} {s.name:28s} FreeSurfer {' '.join(map(str, s.freesurfer_labels)) or '-'}")
    models = list_models()
    print(f"models (user store: {user_model_store()}):")
    if not models:
        print("  none installed: no trained model yet; 'seglossbrain train' makes one, --model PATH uses another")
    for entry in models:
        meta = entry.metadata
        print(f"  [{entry.source}] {entry.name}: {meta.get('architecture')}, loss {meta.get('loss', {}).get('name', '?')}"
              f", {meta.get('steps', '?')} steps")
    return EXIT_OK


def run_demo(args, reporter: Reporter) -> int:
    from ..resources import resources_dir

    sample = resources_dir() / "Samples" / "synthetic_t1_demo.nii.gz"
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    args.input = str(sample)
    args.output = str(output_dir / "demo_labels.nii.gz")
    args.volumes = str(output_dir / "demo_volumes.csv")
    args.confidence = str(output_dir / "demo_confidence.nii.gz")
    args.probabilities = args.dicom_seg = args.output_spacing = None
    args.hemispheres = args.force = False
    reporter.log(f"segmenting the embedded demo volume {sample.name} (synthetic T1, made by SegLossBrain's generator)")
    return run_segment(args, reporter)


def add_segment_commands(commands) -> None:
    segment = commands.add_parser("segment", help="segment a brain MR volume")
    segment.add_argument("input", help="volume file (.nii/.nii.gz/.nrrd/.mha/.mgz) or DICOM series folder")
    segment.add_argument("output", help="labelmap to write (.nii.gz, .nii, .nrrd, .mha, .seg.nrrd), on the input's grid")
    add_model_options(segment)
    segment.add_argument("--probabilities", help="also write class probabilities (20-channel, network grid)")
    segment.add_argument("--confidence", help="also write the per-voxel max probability (input grid)")
    segment.add_argument("--volumes", help="also write structure volumes (mL) and QC flags as CSV")
    add_output_options(segment)
    segment.add_argument("--dicom-seg", metavar="FILE",
                         help="also write a DICOM Segmentation object referencing the input DICOM series")
    segment.add_argument("--force", action="store_true",
                         help="segment even when no brain is found in the input (exit 2 otherwise)")
    segment.set_defaults(handler=run_segment)

    demo = commands.add_parser("demo", help="segment the embedded demo volume")
    demo.add_argument("--output-dir", default="seglossbrain-demo")
    add_model_options(demo)
    demo.set_defaults(handler=run_demo)

    info = commands.add_parser("info", help="models, label table and device")
    info.set_defaults(handler=run_info)
