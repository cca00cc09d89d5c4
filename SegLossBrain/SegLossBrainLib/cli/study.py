"""``seglossbrain study``: the loss comparison of Wong et al. 2018 (docs/LOSS_STUDY.md)."""
from __future__ import annotations

import json
from pathlib import Path

from .. import paths
from ..study.settings import ALL_ARMS
from .common import StepPrinter, add_device_option, add_precision_option, parse_size, real_pair

DEFAULT_HELD_OUT = ",".join(paths.HELD_OUT_MAPS)


def _data(args, option: str = "--data") -> Path:
    """The data folder: --data, else $SEGLOSSBRAIN_DATA or ../shared/data beside a checkout (an error if none)."""
    return Path(args.data) if args.data else paths.data_dir(option)


def _find(path: str, args) -> str:
    """``path`` itself, or a file of the same name under the data folder (a study continued on another machine)."""
    if Path(path).exists():
        return path
    data = _data(args)
    found = sorted(data.rglob(Path(path).name)) if data.is_dir() else []
    if not found:
        from ..study.runner import StudyError

        raise StudyError(f"{path} not found, nor a file of that name under {data}; pass --data FOLDER")
    return str(found[0])


def _maps(folder: Path, held_out_names: str) -> dict:
    maps = sorted(str(p) for p in Path(folder).glob("*.nii*"))
    training, held_out = paths.split_held_out(maps, held_out_names.split(","))
    return {"label_maps": training, "validation_maps": held_out}


def _default_real_pairs(args) -> list:
    """The real dev scans of the data folder that are there (none without a data folder)."""
    data = Path(args.data) if args.data else paths.find_data_dir()
    if data is None:
        return []
    folder = data / paths.REAL_DEV
    return [(str(folder / i), str(folder / a), n) for n, i, a in paths.REAL_DEV_SCANS
            if (folder / i).is_file() and (folder / a).is_file()]


def _data_options(args) -> dict:
    """Training/held-out maps and real pairs from the options given (left out when not given)."""
    given = {}
    if args.label_maps is not None or args.validation_maps is not None:
        given.update(_maps(Path(args.label_maps) if args.label_maps else _data(args, "--data or --label-maps")
                           / paths.LABEL_MAPS,
                           args.validation_maps or DEFAULT_HELD_OUT))
    if args.no_real:
        given["real_pairs"] = []
    elif args.real:
        given["real_pairs"] = [real_pair(pair) for pair in args.real]
    return given


def _settings(args, device: str):
    from ..device import resolve_precision
    from ..study.runner import StudyError, StudySettings, load_manifest, parse_arms
    from ..study.settings import parse_seeds, upgrade_recorded

    if args.seed is not None and args.seeds is not None:
        raise StudyError("give --seeds or --seed, not both")
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None if args.seed is None else [args.seed]
    given = {
        "steps": args.steps, "patch_size": parse_size(args.patch_size) if args.patch_size else None,
        "arms": parse_arms(args.arms) if args.arms else None,
        "learning_rates": [float(v) for v in args.learning_rates.split(",")] if args.learning_rates else None,
        "seeds": seeds, "validate_every": args.validate_every, "checkpoint_every": args.checkpoint_every,
        "precision": resolve_precision(args.precision, device) if args.precision else None,
        "validation_size": parse_size(args.validation_size) if args.validation_size else None,
        "recalibrate_bn": args.recalibrate_bn, "grid_spacing": args.grid_spacing, "lr_schedule": args.lr_schedule,
        "warmup_steps": args.warmup_steps, "batch_size": args.batch_size,
        "validation_bn_samples": args.validation_bn_samples, "validation_draws": args.validation_draws,
        **_data_options(args),
    }
    given = {k: v for k, v in given.items() if v is not None}
    manifest = load_manifest(args.out)
    if manifest is None:
        if args.report_only:
            raise StudyError(f"--report-only: {args.out} holds no study (no study.json)")
        if "steps" not in given:
            raise StudyError("a new study needs --steps (see docs/LOSS_STUDY.md for the budget)")
        if "label_maps" not in given:
            given.update(_maps(_data(args, "--data or --label-maps") / paths.LABEL_MAPS, DEFAULT_HELD_OUT))
        if not given["label_maps"]:
            folder = args.label_maps or _data(args) / paths.LABEL_MAPS
            raise StudyError(f"no training label maps found (looked in {folder}); pass --label-maps")
        if "real_pairs" not in given:
            given["real_pairs"] = _default_real_pairs(args)
        given.setdefault("precision", resolve_precision("auto", device))  # recorded: a continued study keeps it
        return StudySettings(**given, device=device), None
    recorded = upgrade_recorded(manifest["settings"])
    recorded.update(given, device=device)
    recorded["label_maps"] = [_find(p, args) for p in recorded["label_maps"]]
    recorded["validation_maps"] = [_find(p, args) for p in recorded["validation_maps"]]
    recorded["real_pairs"] = [(_find(i, args), _find(a, args), n) for i, a, n in recorded["real_pairs"]]
    return StudySettings(**recorded), manifest


def _describe(event: dict) -> str | None:
    kind, run = event.get("event"), event.get("run", "")
    if kind == "validation":
        return f"[{run}] step {event['step']}: held-out synthetic Dice {event['synthetic_mean']:.3f}, " \
               f"real Dice {event['real_mean']:.3f}"
    if kind == "run_end":
        return f"[{run}] {event['status']} at step {event['step']}"
    if kind == "run_skip":
        return f"[{run}] skipped: {event['reason']}"
    if kind == "vnet_choice":
        return (f"V-Net arm uses the loss of {event['arm']} (held-out synthetic Dice by arm: "
                f"{json.dumps({k: round(v, 4) for k, v in (event['scores'] or {}).items()})})")
    if kind == "evaluate":
        return f"[{run}] evaluating best weights"
    return (f"[{run}] " if run else "") + event["message"] if "message" in event else None


def run_study_command(args, reporter) -> int:
    from ..device import seed_numpy, set_threads, training_device
    from ..study.report import report_study
    from ..study.runner import check_settings, load_manifest, parse_part, record_evaluation_settings, run_study

    part = parse_part(args.part) if args.part else (1, 1)
    set_threads(args.threads)
    seed_numpy()
    device = training_device(args.device)
    settings, manifest = _settings(args, device)
    printer = StepPrinter(reporter, "study", _describe)
    if args.report_only:
        check_settings(args.out, manifest, settings)
        record_evaluation_settings(args.out, manifest, settings)
    else:
        try:
            result = run_study(args.out, settings, printer, part)
        finally:
            printer.close()
        if result["status"] == "stopped":
            print(f"study stopped; run the same command again to continue ({Path(args.out) / 'study.json'})")
            return 0
        if result["status"] == "waiting":
            print(f"study part {args.part} waiting for the other parts; run it again when they have finished "
                  f"(or --report-only for the runs so far)")
            return 0
    report = report_study(args.out, settings, load_manifest(args.out), printer)
    for line in report["note"]:
        print(line)
    for path in report["files"]:
        print(f"written {path}")
    return 0


def add_study_commands(commands) -> None:
    study = commands.add_parser("study", help="compare the losses of Wong et al. 2018 on synthetic brains "
                                              "(resumable; docs/LOSS_STUDY.md)")
    study.add_argument("--out", required=True, help="study folder: study.json, one sub-folder per run, the report")
    study.add_argument("--steps", type=int, help="training steps per run (required for a new study)")
    study.add_argument("--grid-spacing", type=float, metavar="MM",
                       help="the study's grid: training samples, held-out maps and real scans (default 3: the whole "
                            "head in a 64^3 patch; 1.5 is the shipped network's grid)")
    study.add_argument("--patch-size", help="N or DxHxW, multiples of 16 (default: 192 mm, 64 at 3 mm)")
    study.add_argument("--arms", help=f"comma-separated, from {', '.join(ALL_ARMS)} (default: all)")
    study.add_argument("--learning-rates", help="comma-separated (default 1e-3,1e-4)")
    study.add_argument("--seeds", help="comma-separated; every arm runs at every seed (default 0,1)")
    study.add_argument("--seed", type=int, help="one seed (as --seeds N)")
    study.add_argument("--lr-schedule", choices=["poly", "constant"], help="default poly: lr (1 - step/steps)^0.9")
    study.add_argument("--warmup-steps", type=int, help="linear learning-rate ramp at the start (default 0)")
    study.add_argument("--batch-size", type=int, help="default 1")
    study.add_argument("--validate-every", type=int, help="steps between validations (default 200)")
    study.add_argument("--validation-bn-samples", type=int, metavar="N",
                       help="before each validation, re-estimate BatchNorm statistics on N training samples (a "
                            "fixed draw) on a copy of the network (default 16; 0: running averages as trained)")
    study.add_argument("--validation-draws", type=int, help="held-out synthetic images per held-out map (default 2)")
    study.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 100)")
    study.add_argument("--validation-size", help="held-out synthetic grid, N or DxHxW (default: the whole brain, "
                                                 f"{'x'.join(map(str, paths.VALIDATION_SIZE))} at 1.5 mm, "
                                                 "64x80x64 at 3 mm)")
    study.add_argument("--recalibrate-bn", type=int, metavar="N",
                       help="before scoring each run's best weights, re-estimate its BatchNorm statistics on N fresh "
                            "synthetic brains (same draw for every run; default 0: as trained)")
    add_precision_option(study, default=None, note="; a continued study keeps the precision it recorded")
    study.add_argument("--data", help=f"data folder (label maps, real_dev; default ${paths.DATA_ENV}, or ../shared/data "
                                      "beside a source checkout); files of a continued study are looked up here by "
                                      "name if moved")
    study.add_argument("--label-maps", help="folder of label maps (default DATA/synthseg_label_maps)")
    study.add_argument("--validation-maps", help=f"held-out file names (default {DEFAULT_HELD_OUT})")
    study.add_argument("--real", action="append", metavar="IMAGE,ASEG", help="real scan with aseg (repeatable; "
                                                                             "default: bert and vxm of DATA/real_dev)")
    study.add_argument("--no-real", action="store_true", help="no real scans")
    add_device_option(study)
    study.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's own)")
    study.add_argument("--report-only", action="store_true", help="evaluate and write the report; train nothing")
    study.add_argument("--part", metavar="K/N",
                       help="train only the K-th of N interleaved shares of the runs, so that N processes (one per "
                            "core) share one study folder; each part is resumable on its own, and the report is "
                            "written by the part that finishes last")
    study.set_defaults(handler=run_study_command)
