"""What every ``seglossbrain`` sub-command shares: exit codes, the progress reporter, the printer of training
progress, and the parsers of option values. Imports no other CLI file, so sub-command files import only this."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

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


class StepPrinter:
    """The events of training loops (``train``, ``finetune``, ``study``): passed on as JSON lines, or shown as one
    tqdm bar per run on stderr (made at the run's start or first step, so that a refused run prints only its
    error) with every other event as a line from ``describe`` (``None``: nothing printed)."""

    def __init__(self, reporter: Reporter, label: str, describe: Callable[[dict], str | None]):
        self.reporter, self.label, self.describe = reporter, label, describe
        self.bars: dict = {}

    def __call__(self, event: dict) -> None:
        if self.reporter.json_lines:
            self.reporter.emit(**event)
            return
        kind, run = event.get("event"), event.get("run", "")
        if kind == "run_start":
            self._bar(run, event["steps"], event["from_step"])
        elif kind == "step":
            bar = self.bars.get(run) or self._bar(run, event["total"], 0)
            bar.n = event["step"]
            extra = {"eta": f"{event['eta_s']:.0f}s"} if "eta_s" in event else {}
            bar.set_postfix(loss=event["loss"], **extra)
            bar.refresh()
        else:
            if kind == "run_end" and run in self.bars:
                self.bars.pop(run).close()
            line = self.describe(event)
            if line is not None:
                self.write(line, run)

    def _bar(self, run: str, total: int, initial: int):
        from tqdm import tqdm

        self.bars[run] = tqdm(total=total, initial=initial, file=sys.stderr, desc=run or self.label, unit="step")
        return self.bars[run]

    def write(self, line: str, run: str = "") -> None:
        bar = self.bars.get(run)
        bar.write(line) if bar is not None else print(line, file=sys.stderr)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def log_model_status(metadata: dict, reporter: Reporter) -> None:
    """A model that is not released says so with every result."""
    status = metadata.get("status")
    if status and status != "released":
        reporter.log(f"note: this model is {status}: {metadata.get('status_note', '')}".rstrip(": "))


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction between 0 and 1 (e.g. 0.1)")
    return value


def parse_size(text: str) -> tuple:
    parts = [int(p) for p in text.lower().replace("x", ",").split(",") if p]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3:
        raise ValueError(f"size {text!r}: give N or DxHxW")
    return tuple(parts)


def loss_params(text: str | None) -> dict:
    if not text:
        return {}
    try:
        params = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--loss-params must be JSON, e.g. '{{\"gamma_dice\": 0.3}}' ({error})") from None
    if not isinstance(params, dict):
        raise ValueError("--loss-params must be a JSON object")
    return params


def image_labels_pair(text: str) -> tuple[str, str]:
    """``IMAGE,LABELS`` -> (image, labels), refusing anything but two non-empty paths."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"pair {text!r}: give IMAGE,LABELS (two files separated by one comma)")
    return parts[0], parts[1]


def real_pair(text: str) -> tuple[str, str, str]:
    """``IMAGE,ASEG`` -> (image, aseg, case name from the image's file name)."""
    image, labels = text.split(",")
    return image, labels, Path(image).name.split(".")[0]


def format_dice(value) -> str:
    return "  n/a" if value is None else f"{value:.3f}"


def add_progress_json(parser, what: str = "progress and results") -> None:
    """``--progress-json`` on a sub-command as well as before it (``seglossbrain --progress-json CMD``)."""
    parser.add_argument("--progress-json", action="store_true", default=argparse.SUPPRESS,
                        help=f"{what} as JSON lines on stdout")


DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
PRECISION_CHOICES = ("auto", "fp32", "bf16")  # as device.PRECISIONS (that module imports torch)
ENGINE_CHOICES = ("auto", "openvino", "torch")  # as cpu_engine.runner.ENGINES (kept out of --help's imports)
ENGINE_HELP = ("what runs the network: auto (default) takes OpenVINO on a CPU when it is installed (faster; segment then "
               "never loads torch), PyTorch otherwise and on a GPU; openvino; torch")
DEVICE_HELP = ("where to compute: auto (default) takes CUDA, then Apple MPS, then the CPU; cpu, cuda (cuda:N for one "
               "GPU of several) or mps")
PRECISION_HELP = ("auto (default): bf16 autocast where it is native and faster (CUDA GPUs with bf16, CPUs with "
                  "AVX512-BF16 or AMX), else fp32; fp32; bf16 (emulated, so slower, on other CPUs)")
MODEL_HELP = ("model name (see 'seglossbrain models list') or .safetensors path; default: the active version, "
              "which is the shipped model until 'seglossbrain models activate' chooses another")


def device_choice(text: str) -> str:
    """``--device``'s values: auto, cpu, cuda, cuda:N, mps."""
    if text in DEVICE_CHOICES or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"invalid choice {text!r} (choose from {', '.join(DEVICE_CHOICES)}, or cuda:N)")


def add_device_option(command, default: str | None = "auto") -> None:
    """``--device``, the same in every command (``default`` None: the command's own, e.g. a continued run's)."""
    command.add_argument("--device", default=default, type=device_choice, metavar="{auto,cpu,cuda,mps}",
                         help=DEVICE_HELP)


def add_precision_option(command, default: str | None = "auto", note: str = "") -> None:
    """``--precision``, the same choices in every command."""
    command.add_argument("--precision", default=default, choices=PRECISION_CHOICES, help=PRECISION_HELP + note)


def add_engine_option(command) -> None:
    command.add_argument("--engine", default="auto", choices=ENGINE_CHOICES, help=ENGINE_HELP)


def add_model_option(command, help_text: str = MODEL_HELP) -> None:
    command.add_argument("--model", help=help_text)


def add_model_options(command, progress_json: bool = True) -> None:
    """The options of every command that runs the segmentation model (``segment``, ``demo``, ``batch``,
    ``evaluate``)."""
    add_model_option(command)
    add_device_option(command)
    add_precision_option(command)
    command.add_argument("--tta", action="store_true", help="also segment the left-right mirror and average")
    command.add_argument("--remove-islands", type=fraction, default=0.0, metavar="FRACTION",
                         help="give each structure's detached pieces smaller than FRACTION of its largest piece "
                              "to their next most probable class (e.g. 0.1; off by default, CSF never)")
    command.add_argument("--no-pial-refinement", dest="pial_refinement", action="store_false",
                         help="keep the network's own boundary between cortex and the outside; by default it is "
                              "decided again at the input's resolution from the image's intensities")
    if progress_json:
        add_progress_json(command)


def add_overwrite_option(command) -> None:
    command.add_argument("--overwrite", action="store_true",
                         help="replace outputs that exist already (refused otherwise, before any work)")


def add_output_options(command) -> None:
    """The options of ``segment`` and ``batch`` that shape the labelmap written (and the volumes table)."""
    command.add_argument("--hemispheres", action="store_true",
                         help="left and right structures as FreeSurfer aseg values (2/41 cerebral WM, 17/53 "
                              "hippocampus, ...); the volumes table gets left, right and an asymmetry index")
    command.add_argument("--output-spacing", type=float, metavar="MM",
                         help="labels (and confidence) on an isotropic grid of MM mm covering the input, e.g. 1 "
                              "for a scan with thick slices (default: the input's own grid)")
