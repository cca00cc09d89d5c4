"""The ``seglossbrain`` command. Progress goes to stderr (a tqdm bar, or JSON lines on stdout with
``--progress-json`` for the Slicer module), results to stdout; exit 0 only on success, 2 on bad input.

One file per group of sub-commands (``segment``/``demo``/``info``, ``batch``, ``train``, ``evaluate``, ``finetune``,
``models``, ``study``); what they share is in ``common``, which imports no other CLI file. Each file imports the
engine inside its handlers, so ``seglossbrain --help`` does not load torch.
"""
from __future__ import annotations

import argparse
import os
import sys

from . import batch, evaluate, finetune, models, review, segment, study, training
from .common import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, Reporter

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILURE", "EXIT_OK", "build_parser", "console_main", "main"]

DESCRIPTION = ("Brain MRI segmentation (19 structures) with the networks and losses of Wong et al. 2018. Progress goes "
               "to stderr (or JSON lines on stdout with --progress-json), results to stdout. Exit code 0: success; "
               "1: the work failed part-way (what was written is named); 2: bad input, refused before any work, "
               "nothing written. 'seglossbrain COMMAND --help' describes each command.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seglossbrain", description=DESCRIPTION)
    parser.add_argument("--progress-json", action="store_true", help="progress and results as JSON lines on stdout")
    commands = parser.add_subparsers(dest="command", required=True)
    segment.add_segment_commands(commands)
    batch.add_batch_command(commands)
    training.add_training_commands(commands)
    evaluate.add_evaluate_command(commands)
    finetune.add_finetune_command(commands)
    models.add_models_command(commands)
    study.add_study_commands(commands)
    review.add_review_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    reporter = Reporter(getattr(args, "progress_json", False))
    from ..imageio.atomic import OutputError
    from ..imageio.names import InputError
    from ..labels import LabelError
    from ..models.files import ModelError

    try:
        return args.handler(args, reporter)
    except (InputError, ModelError, LabelError, ValueError, FileNotFoundError) as error:
        reporter.close()
        reporter.emit("error", message=str(error))
        print(f"seglossbrain: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OutputError as error:  # the work was done but a file could not be written: not bad input
        reporter.close()
        reporter.emit("error", message=str(error))
        print(f"seglossbrain: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
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


def console_main() -> None:
    """The ``seglossbrain`` command and ``python -m SegLossBrainLib.cli``: ``main``, then an immediate exit.

    Every output is complete (written to a temporary file and renamed) before ``main`` returns, so the
    interpreter's teardown has nothing left to do but free memory and join torch's thread pools, which takes
    0.8-0.9 s after a segmentation on 2 cores (BENCHMARKS.md, start-up and exit). Streams are flushed first."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
