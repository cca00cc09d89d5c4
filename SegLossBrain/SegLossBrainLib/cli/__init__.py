"""The ``seglossbrain`` command. Progress goes to stderr (a tqdm bar, or JSON lines on stdout with
``--progress-json`` for the Slicer module), results to stdout; exit 0 only on success, 2 on bad input."""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from pathlib import Path

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


class Reporter:
    """One progress stream, shown as a tqdm bar on stderr or as JSON lines on stdout."""

    def __init__(self, json_lines: bool):
        self.json_lines = json_lines
        self.bar = None

    def emit(self, event: str, **fields) -> None:
        if self.json_lines:
            print(json.dumps({"event": event, **fields}), flush=True)

    def progress(self, fraction: float, message: str) -> None:
        if self.json_lines:
            self.emit("progress", fraction=round(fraction, 3), message=message)
            return
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=100, file=sys.stderr, bar_format="{l_bar}{bar}| {elapsed}", leave=False)
        self.bar.set_description(message)
        self.bar.update(int(fraction * 100) - self.bar.n)

    def log(self, message: str) -> None:
        if self.json_lines:
            self.emit("log", message=message)
        else:
            print(message, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _write_volumes_csv(volumes_ml: dict, path: Path) -> None:
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".csv", dir=path.parent if str(path.parent) else ".")
    with os.fdopen(handle, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["structure", "volume_ml"])
        for name, value in volumes_ml.items():
            writer.writerow([name, f"{value:.3f}"])
    os.replace(temporary, path)


def _check_output_path(path: Path) -> None:
    from ..imageio.volumes import InputError

    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"output folder {folder} does not exist; create it or choose another output path")
    if not os.access(folder, os.W_OK):
        raise InputError(f"output folder {folder} is not writable; choose another output path")


def run_segment(args, reporter: Reporter) -> int:
    from ..inference.segment import segment
    from ..imageio.volumes import read_image

    outputs = [Path(args.output)] + [Path(p) for p in (args.probabilities, args.confidence, args.volumes) if p]
    for path in outputs:  # fail before an hour of work, not after
        _check_output_path(path)
    image = read_image(args.input)
    result = segment(image, model=args.model, device=args.device, tta=args.tta,
                     island_fraction=args.remove_islands,
                     return_probabilities=bool(args.probabilities), with_confidence=bool(args.confidence),
                     progress=reporter.progress)
    reporter.close()
    status = result.model_metadata.get("status")
    if status and status != "released":
        reporter.log(f"note: this model is {status}: {result.model_metadata.get('status_note', '')}".rstrip(": "))
    written: list[Path] = []
    try:
        _write_outputs(args, result, written)
    except BaseException:
        for path in written:  # all outputs or none
            path.unlink(missing_ok=True)
        raise
    if reporter.json_lines:
        reporter.emit("result", output=str(args.output), confidence=args.confidence, volumes_ml=result.volumes_ml)
    else:
        print(f"labels written to {args.output} (device {result.device})")
        for name, value in result.volumes_ml.items():
            print(f"  {name:28s} {value:9.2f} mL")
    return EXIT_OK


def _write_outputs(args, result, written: list) -> None:
    import SimpleITK as sitk

    from ..imageio.volumes import write_image

    written.append(write_image(result.labels, args.output))
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
        _write_volumes_csv(result.volumes_ml, args.volumes)
        written.append(Path(args.volumes))


def run_info(args, reporter: Reporter) -> int:
    import torch

    from .. import __version__
    from ..inference.segment import select_device
    from ..labels import load_label_table
    from ..models.files import list_models, user_model_store

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
    args.probabilities = None
    reporter.log(f"segmenting the embedded demo volume {sample.name} (synthetic T1, made by SegLossBrain's generator)")
    return run_segment(args, reporter)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction between 0 and 1 (e.g. 0.1)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seglossbrain", description=__doc__.split("\n")[0])
    parser.add_argument("--progress-json", action="store_true", help="progress and results as JSON lines on stdout")
    commands = parser.add_subparsers(dest="command", required=True)

    def add_model_options(command):
        command.add_argument("--model", help="model name or .safetensors path (default: the shipped model)")
        command.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
        command.add_argument("--tta", action="store_true", help="also segment the left-right mirror and average")
        command.add_argument("--remove-islands", type=_fraction, default=0.0, metavar="FRACTION",
                             help="give each structure's detached pieces smaller than FRACTION of its largest piece "
                                  "to their next most probable class (e.g. 0.1; off by default, CSF never)")
        command.add_argument("--progress-json", action="store_true", default=argparse.SUPPRESS,
                             help="progress and results as JSON lines on stdout")

    segment = commands.add_parser("segment", help="segment a brain MR volume")
    segment.add_argument("input", help="volume file (.nii/.nii.gz/.nrrd/.mha/.mgz) or DICOM series folder")
    segment.add_argument("output", help="labelmap to write (.nii.gz, .nii, .nrrd, .mha, .seg.nrrd), on the input's grid")
    add_model_options(segment)
    segment.add_argument("--probabilities", help="also write class probabilities (20-channel, network grid)")
    segment.add_argument("--confidence", help="also write the per-voxel max probability (input grid)")
    segment.add_argument("--volumes", help="also write structure volumes (mL) as CSV")
    segment.set_defaults(handler=run_segment)

    demo = commands.add_parser("demo", help="segment the embedded demo volume")
    demo.add_argument("--output-dir", default="seglossbrain-demo")
    add_model_options(demo)
    demo.set_defaults(handler=run_demo)

    info = commands.add_parser("info", help="models, label table and device")
    info.set_defaults(handler=run_info)

    from .training import add_training_commands

    add_training_commands(commands)
    from .finetune import add_finetune_commands

    add_finetune_commands(commands)
    from .study import add_study_commands

    add_study_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    reporter = Reporter(getattr(args, "progress_json", False))
    from ..labels import LabelError
    from ..models.files import ModelError
    from ..imageio.volumes import InputError

    try:
        return args.handler(args, reporter)
    except (InputError, ModelError, LabelError, ValueError, FileNotFoundError) as error:
        reporter.close()
        reporter.emit("error", message=str(error))
        print(f"seglossbrain: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        reporter.close()
        print("seglossbrain: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # an unexpected failure still ends with one clear line and a non-zero exit
        reporter.close()
        reporter.emit("error", message=f"{type(error).__name__}: {error}")
        print(f"seglossbrain: unexpected error: {type(error).__name__}: {error}", file=sys.stderr)
        if os.environ.get("SEGLOSSBRAIN_DEBUG"):
            raise
        return EXIT_FAILURE

