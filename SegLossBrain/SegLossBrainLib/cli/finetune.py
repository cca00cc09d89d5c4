"""``seglossbrain finetune`` and ``seglossbrain models list|activate|revert|delete``.

``finetune`` exits 0 when a new version was written, 1 when the run ended with nothing to keep (cancelled
or diverged before its first validation), 2 on bad input (one line saying what and how to fix it).

``finetune --stop-file PATH`` is how a caller stops a run gracefully on every OS (Windows has no SIGTERM to
catch): once PATH exists the run ends after its current step, exactly as a cancel, keeping the best validated
weights. The caller creates (and later removes) the file; this command only looks for it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading

STOP_FILE_POLL_SECONDS = 0.5

from .training import _loss_params, _parse_size


def _pair(text: str) -> tuple[str, str]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"pair {text!r}: give IMAGE,LABELS (two files separated by one comma)")
    return parts[0], parts[1]


def _fmt(value) -> str:
    return "  n/a" if value is None else f"{value:.3f}"


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


def run_finetune(args, reporter) -> int:
    from ..finetuning.finetune import FinetuneConfig, finetune
    from ..training.trainer import set_threads

    set_threads(args.threads)
    config = FinetuneConfig(
        pairs=[_pair(p) for p in args.pairs], name=args.name, base=args.base,
        validation=_pair(args.validation) if args.validation else None, loss=args.loss,
        loss_params=_loss_params(args.loss_params), steps=args.steps, learning_rate=args.lr,
        batch_size=args.batch_size, patch_size=_parse_size(args.patch_size), validate_every=args.validate_every,
        patience=args.patience, freeze_encoder=args.freeze_encoder, augment=not args.no_augment,
        freeze_batchnorm=not args.update_batchnorm, input_noise=args.input_noise,
        resample_labels=args.resample_labels, seed=args.seed, device=args.device, precision=args.precision)
    bar = None

    def write(message: str) -> None:
        bar.write(message) if bar is not None else print(message, file=sys.stderr)

    def on_event(event: dict) -> None:
        nonlocal bar
        if reporter.json_lines:
            reporter.emit(**event)
            return
        kind = event["event"]
        if kind == "step":
            if bar is None:  # made on the first step, so that a refused run prints only its error line
                from tqdm import tqdm

                bar = tqdm(total=config.steps, file=sys.stderr, desc="fine-tuning", unit="step")
            bar.n = event["step"]
            bar.set_postfix(loss=event["loss"], eta=f"{event['eta_s']:.0f}s")
            bar.refresh()
        elif kind == "validation":
            best = "" if event.get("before") else f" (best {_fmt(event.get('best_mean'))} at step {event.get('best_step')})"
            write(f"step {event['step']}: validation Dice {_fmt(event['mean'])}{best}")
        elif kind != "result":
            write(event.get("message", json.dumps(event)))

    cancel, done = threading.Event(), threading.Event()
    if args.stop_file:
        watch_stop_file(args.stop_file, cancel, done)
    try:
        result = finetune(config, on_event=on_event, cancel=cancel)
    finally:
        done.set()
        if bar is not None:
            bar.close()
    if not reporter.json_lines:
        _print_summary(result)
    return 0 if result.path is not None else 1


def _print_summary(result) -> None:
    if result.path is None:
        print(f"{result.status}: no new version written")
        return
    print(f"{result.status}: {result.name} written to {result.path} (weights of step {result.best_step})")
    print(f"validation Dice {_fmt(result.before['mean'])} -> {_fmt(result.after['mean'])}")
    for name, before in result.before["dice"].items():
        after = result.after["dice"].get(name)
        if before is not None or after is not None:
            print(f"  {name:28s} {_fmt(before)} -> {_fmt(after)}")
    print(f"use it with 'seglossbrain models activate {result.name}' (or --model {result.name})")


def run_models(args, reporter) -> int:
    from ..models import store as model_store

    action = args.models_command
    if action == "list":
        versions = [v.summary() for v in model_store.list_versions()]
        if reporter.json_lines:
            reporter.emit("result", models=versions)
        elif not versions:
            print("no models installed")
        for v in versions if not reporter.json_lines else []:
            extra = f", base {v['base']}, Dice {_fmt(v['dice_before'])} -> {_fmt(v['dice_after'])}" if v["base"] else ""
            print(f"{'*' if v['active'] else ' '} {v['name']:32s} {v['source']:7s} loss {v['loss']}, "
                  f"{v['steps']} steps{extra}")
        return 0
    if action == "activate":
        version = model_store.activate(args.name)
        message = f"{version.name} ({version.source}) is now the active model"
    elif action == "revert":
        removed = model_store.revert()
        message = "reverted to the shipped default model" if removed else "already using the shipped default model"
    else:
        path = model_store.delete(args.name)
        message = f"deleted {args.name} ({path})"
    if reporter.json_lines:
        reporter.emit("result", action=action, message=message)
    else:
        print(message)
    return 0


def add_finetune_commands(commands) -> None:
    tune = commands.add_parser("finetune", help="fine-tune a model on your own (image, labelmap) pairs")
    tune.add_argument("--pairs", action="append", required=True, metavar="IMAGE,LABELS",
                      help="training pair (repeatable); labels in the 19-structure order or FreeSurfer aseg values")
    tune.add_argument("--validation", metavar="IMAGE,LABELS",
                      help="validation case (default: the last pair when there are two or more)")
    tune.add_argument("--name", required=True, help="name of the new version in the user model store")
    tune.add_argument("--base", help="model to start from, name or .safetensors path (default: the active model)")
    tune.add_argument("--loss", default="explog", help="loss name (explog, wce, gdl or any registered loss)")
    tune.add_argument("--loss-params", help="JSON object, e.g. '{\"gamma\": 0.3, \"w_dice\": 0.8, \"w_cross\": 0.2}'")
    tune.add_argument("--steps", type=int, default=200)
    tune.add_argument("--lr", type=float, default=3e-5, help="Adam learning rate (docs/FINETUNING_RESULTS.md)")
    tune.add_argument("--batch-size", type=int, default=1)
    tune.add_argument("--patch-size", default="64", help="N or DxHxW, multiples of 16")
    tune.add_argument("--validate-every", type=int, default=20)
    tune.add_argument("--patience", type=int, default=5, help="validations without improvement before stopping; 0: off")
    tune.add_argument("--update-batchnorm", action="store_true",
                      help="also update BatchNorm running statistics (default: keep the base model's)")
    tune.add_argument("--input-noise", action="store_true",
                      help="keep the network's training-time input noise (default off: on a few real cases it "
                           "lowers Dice, docs/FINETUNING_RESULTS.md)")
    tune.add_argument("--freeze-encoder", action="store_true", help="train the decoder and head only")
    tune.add_argument("--resample-labels", action="store_true",
                      help="labels on another grid than their image: resample them (nearest neighbour)")
    tune.add_argument("--no-augment", action="store_true", help="no flips, gamma, bias field or noise")
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    tune.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    tune.add_argument("--threads", type=int, default=None)
    tune.add_argument("--stop-file", metavar="PATH",
                      help="stop gracefully once this file exists (checked twice a second, on every OS): the run "
                           "ends after its current step and keeps the best validated weights (exit 1 if none "
                           "was validated yet), as Ctrl+C or SIGTERM do. Give a path that does not exist yet; "
                           "the caller creates the file to stop the run and removes it afterwards")
    tune.add_argument("--progress-json", action="store_true", default=argparse.SUPPRESS,
                      help="progress and results as JSON lines on stdout")
    tune.set_defaults(handler=run_finetune)

    manage = commands.add_parser("models", help="list, activate, revert or delete model versions")
    manage.add_argument("--progress-json", action="store_true", default=argparse.SUPPRESS,
                        help="results as JSON lines on stdout")
    actions = manage.add_subparsers(dest="models_command", required=True)
    listing = actions.add_parser("list", help="shipped and user versions; * marks the active one")
    activate = actions.add_parser("activate", help="use this version when no model is named")
    activate.add_argument("name")
    revert = actions.add_parser("revert", help="use the shipped default model again")
    delete = actions.add_parser("delete", help="delete a user version (not shipped ones, not the active one)")
    delete.add_argument("name")
    for action in (listing, activate, revert, delete):  # `models list --progress-json` works as well
        action.add_argument("--progress-json", action="store_true", default=argparse.SUPPRESS,
                            help="results as JSON lines on stdout")
    manage.set_defaults(handler=run_models)
