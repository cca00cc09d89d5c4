"""``seglossbrain train``: the network trained on synthetic brains made from label maps."""
from __future__ import annotations

import json
from pathlib import Path

from .. import paths
from .common import (StepPrinter, add_device_option, add_precision_option, image_labels_pair, loss_params, parse_size,
                     real_pair)


def _describe(event: dict) -> str:
    if event["event"] == "validation":
        return f"step {event['step']}: synthetic Dice {event['synthetic_mean']:.3f}, real Dice {event['real_mean']:.3f}"
    return event.get("message", str(event))


def _label_map_files(where: str) -> list[str]:
    """A folder's label maps, or a comma-separated list of files."""
    return sorted(str(p) for p in Path(where).glob("*.nii*")) if Path(where).is_dir() else list(where.split(","))


def run_train(args, reporter) -> int:
    from ..device import resolve_precision, seed_numpy, set_threads, training_device
    from ..training.trainer import TrainingConfig, train

    set_threads(args.threads)
    seed_numpy()
    label_maps = args.label_maps or str(paths.label_maps_dir("--label-maps"))
    maps = _label_map_files(label_maps)
    training, validation = paths.split_held_out(maps, args.validation_maps.split(",") if args.validation_maps else ())
    if not training:
        raise ValueError(f"no training label maps found in {label_maps}")
    brain_maps = []
    if args.brain_label_maps:
        found = _label_map_files(args.brain_label_maps)
        held_out = args.brain_validation_maps.split(",") if args.brain_validation_maps else ()
        brain_maps, brain_validation = paths.split_held_out(found, held_out)
        if not brain_maps:
            raise ValueError(f"no brain-only label maps left for training in {args.brain_label_maps}")
        validation += brain_validation
    config = TrainingConfig(
        label_maps=training, validation_maps=validation, brain_label_maps=brain_maps,
        brain_maps_share=args.brain_maps_share, composite_heads=args.composite_heads,
        composite_share=args.composite_share, real_pairs=[real_pair(p) for p in args.real or []],
        run_dir=args.run_dir, architecture=args.architecture, loss=args.loss, loss_params=loss_params(args.loss_params),
        optimizer=args.optimizer, learning_rate=args.lr, lr_schedule=args.lr_schedule,
        warmup_steps=args.warmup_steps, input_noise_std=args.input_noise_std, batch_size=args.batch_size,
        patch_size=parse_size(args.patch_size), steps=args.steps, checkpoint_every=args.checkpoint_every,
        validate_every=args.validate_every, seed=args.seed, device=training_device(args.device),
        init_weights=args.init_weights, precision=resolve_precision(args.precision, training_device(args.device)),
        freeze_batchnorm=args.freeze_batchnorm,
        labelled_scans=[image_labels_pair(p) for p in args.labelled_scan or []],
        labelled_fraction=args.labelled_fraction, soft_labels=args.soft_labels,
        labelled_rotation_deg=args.labelled_rotation, labelled_scaling=args.labelled_scaling,
    )
    printer = StepPrinter(reporter, "training", _describe)
    if args.resume and not reporter.json_lines:
        printer.write(f"resuming from {Path(args.run_dir) / 'last.pt'}")
    try:
        result = train(config, resume=args.resume, on_event=printer)
    finally:
        printer.close()
    print(json.dumps(result))
    return 0 if result["status"] in ("finished", "stopped") else 1


def add_training_commands(commands) -> None:
    train = commands.add_parser("train", help="train the network on synthetic brains made from label maps")
    train.add_argument("--label-maps", help="folder of label maps (or comma-separated files); default: "
                                            f"{paths.LABEL_MAPS} in ${paths.DATA_ENV}, or in ../shared/data beside a "
                                            "source checkout")
    train.add_argument("--validation-maps", default=",".join(paths.HELD_OUT_MAPS),
                       help="comma-separated file names held out of training for synthetic validation")
    train.add_argument("--brain-label-maps",
                       help="folder (or comma-separated files) of brain-only label maps drawn FreeSurfer's way, e.g. "
                            f"{paths.BRAIN_LABEL_MAPS}/ of the data folder: mixed into the full-head maps")
    train.add_argument("--brain-maps-share", type=float, default=0.5,
                       help="share of synthetic images drawn from --brain-label-maps (default 0.5)")
    train.add_argument("--brain-validation-maps", default=",".join(paths.HELD_OUT_BRAIN_MAPS),
                       help="comma-separated file names of --brain-label-maps held out for synthetic validation")
    train.add_argument("--composite-heads", type=int, default=0,
                       help="place each brain-only map inside this many full-head maps too (skull-on images drawn "
                            "FreeSurfer's way; default 0: none)")
    train.add_argument("--composite-share", type=float, default=0.5,
                       help="share of the brain-only maps' images drawn from those composite heads (default 0.5)")
    train.add_argument("--real", action="append", metavar="IMAGE,ASEG", help="real validation pair (repeatable)")
    train.add_argument("--run-dir", default="runs/train", help="checkpoints, log and best weights go here")
    train.add_argument("--architecture", default="wong2018", choices=["wong2018", "vnet"],
                       help="the network: wong2018 (the paper's, default) or vnet")
    train.add_argument("--loss", default="explog", help="loss name (default explog; wce, gdl, dice or any registered)")
    train.add_argument("--loss-params", help="JSON object of loss parameters")
    train.add_argument("--optimizer", default="adam", choices=["adam", "nadam"], help="default adam")
    train.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    train.add_argument("--lr-schedule", default="constant", choices=["constant", "poly"],
                       help="poly: lr x (1 - step/steps)^0.9, reaching ~0 at --steps")
    train.add_argument("--warmup-steps", type=int, default=0, help="linear learning-rate ramp over these steps")
    train.add_argument("--input-noise-std", type=float, default=None,
                       help="the network's train-time input noise, in units of the image std (default: the "
                            "architecture's, 1.0 for wong2018 as in the paper; 0 turns it off)")
    train.add_argument("--batch-size", type=int, default=1, help="patches per step (default 1)")
    train.add_argument("--patch-size", default="64", help="N or DxHxW, multiples of 16")
    train.add_argument("--steps", type=int, default=10000, help="training steps (default 10000)")
    train.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints (default 100)")
    train.add_argument("--validate-every", type=int, default=500, help="steps between validations (default 500)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_device_option(train)
    train.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's own)")
    add_precision_option(train)
    train.add_argument("--resume", action="store_true", help="continue exactly from RUN_DIR/last.pt")
    train.add_argument("--init-weights", help="start from these weights (.safetensors) instead of random")
    train.add_argument("--labelled-scan", action="append", metavar="IMAGE,LABELS",
                       help="a real scan with its labelmap (19-structure order or FreeSurfer aseg values) mixed into "
                            "the synthetic brains (repeatable): teaches the labels' convention, e.g. FreeSurfer's")
    train.add_argument("--labelled-fraction", type=float, default=0.5,
                       help="share of training batches drawn from the --labelled-scan cases (default 0.5)")
    train.add_argument("--labelled-rotation", type=float, default=0.0, metavar="DEG",
                       help="turn each --labelled-scan patch by up to DEG degrees about each axis (default 0), so "
                            "that the scans' labels are not learnt in one pose only")
    train.add_argument("--labelled-scaling", type=float, default=0.0, metavar="FRACTION",
                       help="scale each --labelled-scan patch by up to this fraction along each axis (default 0)")
    train.add_argument("--soft-labels", action="store_true",
                       help="train on the --labelled-scan labels as each structure's share of every 1.5 mm voxel "
                            "(partial volume) instead of the nearest label")
    train.add_argument("--freeze-batchnorm", action="store_true",
                       help="keep the BatchNorm running statistics of --init-weights (as fine-tuning does)")
    train.set_defaults(handler=run_train)
