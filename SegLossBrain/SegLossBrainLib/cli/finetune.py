"""``seglossbrain finetune``: a new model version from the user's own (image, labelmap) pairs.

``finetune`` exits 0 when a new version was written, 1 when the run ended with nothing to keep (cancelled
or diverged before its first validation), 2 on bad input (one line saying what and how to fix it).
``--continue NAME`` continues a stopped or crashed run (``finetuning/unfinished.py``); ``--list-unfinished``
and ``--discard NAME`` show and remove such runs.

``finetune --stop-file PATH`` is how a caller stops a run gracefully on every OS (Windows has no SIGTERM to
catch): once PATH exists the run ends after its current step, exactly as a cancel, keeping the best validated
weights. The caller creates (and later removes) the file; this command only looks for it.
"""
from __future__ import annotations

import json
import os
import threading

from .common import (MODEL_HELP, StepPrinter, add_device_option, add_precision_option, add_progress_json, format_dice,
                     image_labels_pair, loss_params, parse_size)

STOP_FILE_POLL_SECONDS = 0.5


def watch_stop_file(path: str, cancel: threading.Event, done: threading.Event,
                    interval: float = STOP_FILE_POLL_SECONDS) -> threading.Thread:
    """A daemon thread that sets ``cancel`` once ``path`` exists; it ends then, or when ``done`` is set."""

    def watch() -> None:
        while not done.is_set():
            if os.path.exists(path):
                cancel.set()
                return
            done.wait(interval)

    thread = threading.Thread(target=watch, name="seglossbrain-stop-file", daemon=True)
    thread.start()
    return thread


def _describe(event: dict) -> str | None:
    kind = event["event"]
    if kind == "validation":
        kept = "" if event.get("before") else \
            f" (kept: {format_dice(event.get('best_mean'))}, step {event.get('best_step')})"
        return f"step {event['step']}: validation Dice {format_dice(event['mean'])}{kept}"
    return None if kind == "result" else event.get("message", json.dumps(event))


# CLI option -> FinetuneConfig field, for the options whose default is the engine's (finetuning/config.py)
_TUNING = {"steps": "steps", "max_minutes": "max_minutes", "lr": "learning_rate", "lr_schedule": "lr_schedule",
           "warmup_steps": "warmup_steps", "batch_size": "batch_size", "validate_every": "validate_every",
           "validations": "validations", "patience": "patience", "seed": "seed", "device": "device",
           "precision": "precision"}


def _config(args):
    from ..finetuning.finetune import FinetuneConfig, FinetuneError

    if not args.pairs or not args.name:
        raise FinetuneError("give the training pairs (--pairs IMAGE,LABELS, repeatable) and --name for the new "
                            "version; or --continue NAME to continue an unfinished run")
    given = {field: getattr(args, option) for option, field in _TUNING.items() if getattr(args, option) is not None}
    if args.patch_size is not None:
        given["patch_size"] = parse_size(args.patch_size)
    return FinetuneConfig(
        pairs=[image_labels_pair(p) for p in args.pairs], name=args.name, base=args.base,
        validation=image_labels_pair(args.validation) if args.validation else None, loss=args.loss,
        loss_params=loss_params(args.loss_params), freeze_encoder=args.freeze_encoder, augment=not args.no_augment,
        freeze_batchnorm=not args.update_batchnorm, input_noise=args.input_noise, focus_errors=not args.no_focus,
        single_case_limit=not args.no_single_case_limit,
        resample_labels=args.resample_labels, **given)


def _list_unfinished() -> int:
    from ..finetuning import unfinished

    runs = unfinished.list_runs()
    for run in runs:
        plan = run.record.get("plan") or {}
        saved = run.record.get("version_saved")
        print(f"{run.name}: step {run.step} of {plan.get('steps', '?')}"
              + (f" (stopped; version {saved} saved)" if saved else " (interrupted; no version saved)"))
    if not runs:
        print("no unfinished fine-tunes")
    return 0


def run_finetune(args, reporter) -> int:
    from ..device import seed_numpy, set_threads
    from ..finetuning import unfinished
    from ..finetuning.finetune import FinetuneError, continue_finetune, finetune

    if args.list_unfinished:
        return _list_unfinished()
    if args.discard:
        try:
            unfinished.discard(args.discard)
        except unfinished.UnfinishedError as error:
            raise FinetuneError(str(error)) from None
        print(f"discarded the unfinished fine-tune {args.discard}")
        return 0
    set_threads(args.threads)
    seed_numpy()
    config = None if args.continue_run else _config(args)
    printer = StepPrinter(reporter, "fine-tuning", _describe)
    cancel, done = threading.Event(), threading.Event()
    if args.stop_file:
        watch_stop_file(args.stop_file, cancel, done)
    try:
        if config is None:
            result = continue_finetune(args.continue_run, new_name=args.name, on_event=printer, cancel=cancel,
                                       device=args.device)
        else:
            result = finetune(config, on_event=printer, cancel=cancel)
    finally:
        done.set()
        printer.close()
    if not reporter.json_lines:
        _print_summary(result)
    return 0 if result.path is not None else 1


def _print_summary(result) -> None:
    if result.path is None:
        print(f"{result.status}: no new version written")
        return
    print(f"{result.status}: {result.name} written to {result.path} (weights of step {result.best_step})")
    scored = result.before.get("scored") or list(result.before["dice"])
    left_out = [name for name in result.before["dice"] if name not in scored]
    print(f"validation Dice {format_dice(result.before['mean'])} -> {format_dice(result.after['mean'])} (mean over "
          f"{len(scored)} structures" + (f"; {', '.join(left_out)} left out: FreeSurfer's aseg draws them differently)"
                                         if left_out else ")"))
    for name, before in result.before["dice"].items():
        after = result.after["dice"].get(name)
        if before is not None or after is not None:
            note = "  (left out of the mean)" if name in left_out else ""
            print(f"  {name:28s} {format_dice(before)} -> {format_dice(after)}{note}")
    print(f"use it with 'seglossbrain models activate {result.name}' (or --model {result.name})")


def add_finetune_command(commands) -> None:
    tune = commands.add_parser("finetune", help="fine-tune a model on your own (image, labelmap) pairs")
    tune.add_argument("--pairs", action="append", metavar="IMAGE,LABELS",
                      help="training pair (repeatable); labels in the 19-structure order or FreeSurfer aseg values")
    tune.add_argument("--validation", metavar="IMAGE,LABELS",
                      help="validation case (default: the last pair when there are two or more)")
    tune.add_argument("--name", help="name of the new version in the user model store (with --continue: the name "
                                     "to save the continued run under; default its own, or NAME-continued)")
    tune.add_argument("--continue", dest="continue_run", metavar="NAME",
                      help="continue the unfinished fine-tune NAME (stopped, or killed by a crash) from its last "
                           "checkpoint, with its own cases and settings")
    tune.add_argument("--list-unfinished", action="store_true", help="list the fine-tunes that can be continued")
    tune.add_argument("--discard", metavar="NAME", help="delete the unfinished fine-tune NAME's working files")
    tune.add_argument("--base", help="model to start from: " + MODEL_HELP)
    tune.add_argument("--loss", default="explog", help="loss name (explog, wce, gdl or any registered loss)")
    tune.add_argument("--loss-params", help="JSON object, e.g. '{\"gamma\": 0.3, \"w_dice\": 0.8, \"w_cross\": 0.2}'")
    tune.add_argument("--max-minutes", type=float,
                      help="time from start to the saved version (default 8); the run times its first steps and "
                           "plans how many fit. 0: no limit, --steps alone decides")
    tune.add_argument("--steps", type=int, help="the most training steps (default 1000; on a CPU the time budget "
                                                "usually ends the run first)")
    tune.add_argument("--lr", type=float, help="peak Adam learning rate (default 3e-4, docs/FINETUNING_RESULTS.md)")
    tune.add_argument("--lr-schedule", choices=["poly", "constant"],
                      help="poly (default): decays to 0 at the planned last step, so the run ends converged")
    tune.add_argument("--warmup-steps", type=int, help="linear warm-up (default 20)")
    tune.add_argument("--batch-size", type=int, help="patches per step (default 1)")
    tune.add_argument("--patch-size", help="N or DxHxW, multiples of 16 (default 96)")
    tune.add_argument("--validate-every", type=int,
                      help="steps between validations (default: --validations spread over the planned steps)")
    tune.add_argument("--validations", type=int, help="validations over the run (default 5)")
    tune.add_argument("--patience", type=int,
                      help="stop when this many validations in a row score below the base model, in the run's "
                           "second half (default 2; a dip below the best score never stops a run); 0: off")
    tune.add_argument("--no-focus", action="store_true",
                      help="sample patches uniformly over the labelled brain instead of favouring where the base "
                           "model disagrees with your labels")
    tune.add_argument("--no-single-case-limit", action="store_true",
                      help="with one case and no validation case, run the full recipe anyway (default: at most 200 "
                           "steps at lr 3e-5, since nothing can tell learning the case from over-fitting it)")
    tune.add_argument("--update-batchnorm", action="store_true",
                      help="also update BatchNorm running statistics (default: keep the base model's)")
    tune.add_argument("--input-noise", action="store_true",
                      help="keep the network's training-time input noise (default off: on a few real cases it "
                           "lowers Dice, docs/FINETUNING_RESULTS.md)")
    tune.add_argument("--freeze-encoder", action="store_true", help="train the decoder and head only")
    tune.add_argument("--resample-labels", action="store_true",
                      help="labels on another grid than their image: resample them (nearest neighbour)")
    tune.add_argument("--no-augment", action="store_true", help="no flips, gamma, bias field or noise")
    tune.add_argument("--seed", type=int, help="random seed of patches and augmentation (default 0)")
    # Defaults None: the engine's (auto), or with --continue the run's own recorded choice.
    add_device_option(tune, default=None)
    add_precision_option(tune, default=None)
    tune.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's own)")
    tune.add_argument("--stop-file", metavar="PATH",
                      help="stop gracefully once this file exists (checked twice a second, on every OS): the run "
                           "ends after its current step and keeps the best validated weights (exit 1 if none "
                           "was validated yet), as Ctrl+C or SIGTERM do. Give a path that does not exist yet; "
                           "the caller creates the file to stop the run and removes it afterwards")
    add_progress_json(tune)
    tune.set_defaults(handler=run_finetune)
