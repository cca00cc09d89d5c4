"""``seglossbrain segment``, ``demo`` and ``info``: a volume in, a labelmap (and volumes, confidence,
probabilities) out; the embedded demo volume; what is installed."""
from __future__ import annotations

import sys
from pathlib import Path

from .common import (EXIT_FAILURE, EXIT_OK, Reporter, add_engine_option, add_model_options, add_output_options,
                     add_overwrite_option, log_model_status)


def _check_request(args) -> None:
    """Everything that can be refused before any work, cheaply (neither torch nor, without --dicom-seg, SimpleITK
    is loaded): the input exists, every output can be written and replaces nothing unasked, option combinations."""
    from ..imageio.names import InputError
    from .segment_outputs import check_requested_outputs

    if not Path(args.input).exists():
        raise InputError(f"{args.input}: no such file or folder")
    check_requested_outputs(args)
    if args.dicom_seg:
        from ..imageio.dicomseg import check_dicom_seg_request, check_series_input

        check_dicom_seg_request(args.output_spacing)
        check_series_input(args.input)


def describe_model(model: dict) -> str:
    """The log line that names the model of every result."""
    return f"model {model['name']} ({model['source']}, sha256 {model['sha256'][:12]}...)"


def run_segment(args, reporter: Reporter) -> int:
    from ..models.store import model_identity

    _check_request(args)
    model = model_identity(args.model)  # a missing model is refused now, not after reading a large volume
    from ..cpu_engine.runner import choose_engine

    choose_engine(args.engine, args.device, model["path"])  # --engine openvino that cannot run: refused now
    from ..imageio.content import refuse_label_map
    from ..imageio.volumes import check_image, read_image

    image = read_image(args.input)
    check_image(image)  # 2D, 4D, constant, NaN: what no option makes usable, said first
    if not args.force:
        refuse_label_map(image)
    from ..inference.segment import segment  # torch: only once the request is known to be good

    reporter.log(describe_model(model))
    result = segment(image, model=model["path"], device=args.device, tta=args.tta,
                     island_fraction=args.remove_islands, pial_refinement=args.pial_refinement,
                     return_probabilities=bool(args.probabilities), with_confidence=bool(args.confidence),
                     progress=reporter.progress, output_spacing=args.output_spacing,
                     hemispheres=args.hemispheres, force=args.force, precision=args.precision,
                     engine=args.engine)
    reporter.close()
    log_model_status(result.model_metadata, reporter)
    for warning in result.quality.warnings:
        reporter.log(f"warning: {warning}")
    from .segment_outputs import write_outputs

    outcome = write_outputs(args, result, model)
    for note in outcome.notes:
        reporter.log(f"note: {note}")
    flags = result.quality.flags
    if reporter.json_lines:
        reporter.emit("result", output=str(args.output), confidence=args.confidence, volumes_ml=result.volumes_ml,
                      side_volumes_ml=result.side_volumes_ml, qc=flags, warnings=result.quality.warnings,
                      hemispheres=bool(args.hemispheres), model=model["name"], model_sha256=model["sha256"],
                      precision=result.precision, engine=result.engine, written=outcome.written,
                      not_written=outcome.failed)
    else:
        if outcome.written and outcome.written[0].startswith("output "):
            print(f"labels written to {args.output} (device {result.device}, {result.engine} {result.precision}, "
                  f"{describe_model(model)})")
        for name, value in result.volumes_ml.items():
            sides = result.side_volumes_ml.get(name)
            side_text = f"  (L {sides[0]:8.2f}, R {sides[1]:8.2f})" if sides else ""
            print(f"  {name:28s} {value:9.2f} mL{side_text}{'  QC: ' + flags[name] if name in flags else ''}")
    if outcome.failed:
        reporter.emit("error", message=outcome.message())
        print(f"seglossbrain: error: {outcome.message()}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _auto_device() -> tuple[str, str]:
    """(torch's version, what --device auto picks), importing torch (a second or more) only when the installed
    build could use a GPU: a CPU-only wheel ("+cpu") can only mean the CPU."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("torch")
    except PackageNotFoundError:
        return "not installed", "none"
    if installed.endswith("+cpu"):
        return installed, "cpu"
    from ..device import select_device

    return installed, select_device("auto").type


def _engine_line(device: str) -> str:
    """What ``--engine auto`` runs a single scan on, from package metadata (importing OpenVINO is not needed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        openvino = version("openvino")
    except PackageNotFoundError:
        return "engine auto -> torch (OpenVINO not installed)"
    return f"engine auto -> {'openvino' if device in ('cpu', 'none') else 'torch'} (OpenVINO {openvino})"


def run_info(args, reporter: Reporter) -> int:
    from .. import __version__
    from ..labels import load_label_table
    from ..models.store import list_models
    from ..paths import user_model_store

    table = load_label_table()
    torch_version, device = _auto_device()
    print(f"SegLossBrain {__version__}, torch {torch_version}, device auto -> {device}, {_engine_line(device)}")
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
    add_engine_option(segment)
    segment.add_argument("--probabilities", help="also write class probabilities (20-channel, network grid; .nii.gz, "
                                                 ".nii, .nrrd or .mha)")
    segment.add_argument("--confidence", help="also write the per-voxel max probability (input grid; .nii.gz, .nii, "
                                              ".nrrd or .mha)")
    segment.add_argument("--volumes", help="also write structure volumes (mL), QC flags and the model as CSV (.csv)")
    add_output_options(segment)
    segment.add_argument("--dicom-seg", metavar="FILE",
                         help="also write a DICOM Segmentation object (.dcm) referencing the input DICOM series")
    segment.add_argument("--force", action="store_true",
                         help="segment even when the input looks like a label map or mask, or no brain is found in "
                              "it (refused with exit 2 otherwise)")
    add_overwrite_option(segment)
    segment.set_defaults(handler=run_segment)

    demo = commands.add_parser("demo", help="segment the embedded demo volume")
    demo.add_argument("--output-dir", default="seglossbrain-demo",
                      help="where demo_labels.nii.gz, demo_volumes.csv and demo_confidence.nii.gz go (default "
                           "seglossbrain-demo)")
    add_model_options(demo)
    add_engine_option(demo)
    add_overwrite_option(demo)
    demo.set_defaults(handler=run_demo)

    info = commands.add_parser("info", help="models, label table and device")
    info.set_defaults(handler=run_info)
