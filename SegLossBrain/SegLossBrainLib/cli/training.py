"""``seglossbrain train``: the network trained on synthetic brains made from label maps."""
from __future__ import annotations

import json
from pathlib import Path

from .. import paths
from .common import StepPrinter, image_labels_pair, loss_params, parse_size, real_pair


def _describe(event: dict) -> str:
    if event["event"] == "validation":
        return f"step {event['step']}: synthetic Dice {event['synthetic_mean']:.3f}, real Dice {event['real_mean']:.3f}"
    return event.get("message", str(event))


def run_train(args, reporter) -> int:
    from ..device import seed_numpy, set_threads, training_device
    from ..training.trainer import TrainingConfig, train

    set_threads(args.threads)
    seed_numpy()
    label_maps = args.label_maps or str(paths.label_maps_dir("--label-maps"))
    maps = sorted(str(p) for p in Path(label_maps).glob("*.nii*")) if Path(label_maps).is_dir() \
        else list(label_maps.split(","))
    training, validation = paths.split_held_out(maps, args.validation_maps.split(",") if args.validation_maps else ())
    if not training:
        raise ValueError(f"no training label maps found in {label_maps}")
    config = TrainingConfig(
        label_maps=training, validation_maps=validation, real_pairs=[real_pair(p) for p in args.real or []],
        run_dir=args.run_dir, architecture=args.architecture, loss=args.loss, loss_params=loss_params(args.loss_params),
        optimizer=args.optimizer, learning_rate=args.lr, lr_schedule=args.lr_schedule,
        warmup_steps=args.warmup_steps, input_noise_std=args.input_noise_std, batch_size=args.batch_size,
        patch_size=parse_size(args.patch_size), steps=args.steps, checkpoint_every=args.checkpoint_every,
        validate_every=args.validate_every, seed=args.seed, device=training_device(args.device),
        init_weights=args.init_weights, precision=args.precision, freeze_batchnorm=args.freeze_batchnorm,
        labelled_scans=[image_labels_pair(p) for p in args.labelled_scan or []],
        labelled_fraction=args.labelled_fraction, soft_labels=args.soft_labels,
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
    train.add_argument("--real", action="append", metavar="IMAGE,ASEG", help="real validation pair (repeatable)")
    train.add_argument("--run-dir", default="runs/train", help="checkpoints, log and best weights go here")
    train.add_argument("--architecture", default="wong2018", choices=["wong2018", "vnet"])
    train.add_argument("--loss", default="explog")
    train.add_argument("--loss-params", help="JSON object of loss parameters")
    train.add_argument("--optimizer", default="adam", choices=["adam", "nadam"])
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--lr-schedule", default="constant", choices=["constant", "poly"],
                       help="poly: lr x (1 - step/steps)^0.9, reaching ~0 at --steps")
    train.add_argument("--warmup-steps", type=int, default=0, help="linear learning-rate ramp over these steps")
    train.add_argument("--input-noise-std", type=float, default=None,
                       help="the network's train-time input noise, in units of the image std (default: the "
                            "architecture's, 1.0 for wong2018 as in the paper; 0 turns it off)")
    train.add_argument("--batch-size", type=int, default=1)
    train.add_argument("--patch-size", default="64", help="N or DxHxW, multiples of 16")
    train.add_argument("--steps", type=int, default=10000)
    train.add_argument("--checkpoint-every", type=int, default=100)
    train.add_argument("--validate-every", type=int, default=500)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto")
    train.add_argument("--threads", type=int, default=None)
    train.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                       help="bf16 autocast: about 2x faster on CPUs with AVX512-BF16 and on GPUs")
    train.add_argument("--resume", action="store_true", help="continue exactly from RUN_DIR/last.pt")
    train.add_argument("--init-weights", help="start from these weights (.safetensors) instead of random")
    train.add_argument("--labelled-scan", action="append", metavar="IMAGE,LABELS",
                       help="a real scan with its labelmap (19-structure order or FreeSurfer aseg values) mixed into "
                            "the synthetic brains (repeatable): teaches the labels' convention, e.g. FreeSurfer's")
    train.add_argument("--labelled-fraction", type=float, default=0.5,
                       help="share of training batches drawn from the --labelled-scan cases (default 0.5)")
    train.add_argument("--soft-labels", action="store_true",
                       help="train on the --labelled-scan labels as each structure's share of every 1.5 mm voxel "
                            "(partial volume) instead of the nearest label")
    train.add_argument("--freeze-batchnorm", action="store_true",
                       help="keep the BatchNorm running statistics of --init-weights (as fine-tuning does)")
    train.set_defaults(handler=run_train)
