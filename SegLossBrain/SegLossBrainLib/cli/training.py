"""``seglossbrain train`` and ``seglossbrain evaluate``: sub-commands added to the main parser."""
from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def _parse_size(text: str) -> tuple:
    parts = [int(p) for p in text.lower().replace("x", ",").split(",") if p]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3:
        raise ValueError(f"size {text!r}: give N or DxHxW")
    return tuple(parts)


def _loss_params(text: str | None) -> dict:
    if not text:
        return {}
    try:
        params = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--loss-params must be JSON, e.g. '{{\"gamma_dice\": 0.3}}' ({error})") from None
    if not isinstance(params, dict):
        raise ValueError("--loss-params must be a JSON object")
    return params


def run_train(args, reporter) -> int:
    from ..training.trainer import TrainingConfig, set_threads, train

    set_threads(args.threads)
    maps = sorted(str(p) for p in Path(args.label_maps).glob("*.nii*")) if Path(args.label_maps).is_dir() \
        else list(args.label_maps.split(","))
    held_out = set(args.validation_maps.split(",")) if args.validation_maps else set()
    validation = [m for m in maps if Path(m).name in held_out]
    training = [m for m in maps if Path(m).name not in held_out]
    if not training:
        raise ValueError(f"no training label maps found in {args.label_maps}")
    real_pairs = []
    for pair in args.real or []:
        image, labels = pair.split(",")
        real_pairs.append((image, labels, Path(image).name.split(".")[0]))
    config = TrainingConfig(
        label_maps=training, validation_maps=validation, real_pairs=real_pairs, run_dir=args.run_dir,
        architecture=args.architecture, loss=args.loss, loss_params=_loss_params(args.loss_params),
        optimizer=args.optimizer, learning_rate=args.lr, lr_schedule=args.lr_schedule,
        warmup_steps=args.warmup_steps, input_noise_std=args.input_noise_std, batch_size=args.batch_size,
        patch_size=_parse_size(args.patch_size), steps=args.steps, checkpoint_every=args.checkpoint_every,
        validate_every=args.validate_every, seed=args.seed, device=args.device if args.device != "auto" else
        ("cuda" if __import__("torch").cuda.is_available() else "cpu"), init_weights=args.init_weights,
        precision=args.precision,
    )
    from tqdm import tqdm

    bar = None if reporter.json_lines else tqdm(total=config.steps, file=sys.stderr, desc="training", unit="step")

    def on_event(event: dict) -> None:
        if reporter.json_lines:
            reporter.emit(**event) if "event" in event else None
            return
        if event["event"] == "step":
            bar.n = event["step"]
            bar.set_postfix(loss=event["loss"])
            bar.refresh()
        elif event["event"] == "validation":
            bar.write(f"step {event['step']}: synthetic Dice {event['synthetic_mean']:.3f}, "
                      f"real Dice {event['real_mean']:.3f}")
        else:
            bar.write(event.get("message", str(event)))

    if bar is not None and args.resume:
        bar.write(f"resuming from {Path(args.run_dir) / 'last.pt'}")
    result = train(config, resume=args.resume, on_event=on_event)
    if bar is not None:
        bar.close()
    print(json.dumps(result))
    return 0 if result["status"] in ("finished", "stopped") else 1


def run_evaluate(args, reporter) -> int:
    import SimpleITK as sitk

    from ..inference.segment import segment
    from ..labels import load_label_table
    from ..evaluation.metrics import evaluate_labels, mean_over
    from ..imageio.volumes import InputError, read_image, same_grid

    table = load_label_table()
    if len(args.images) != len(args.labels):
        raise ValueError(f"{len(args.images)} images but {len(args.labels)} label maps: give one label map per image")
    rows = []
    for image_path, labels_path in zip(args.images, args.labels):
        image, reference_image = read_image(image_path), read_image(labels_path)
        if not same_grid(image, reference_image):
            raise InputError(f"{labels_path} is not on the grid of {image_path} (size, spacing, origin or direction "
                             "differ); resample the labels onto the image first")
        reference = sitk.GetArrayFromImage(reference_image)
        reference = table.map_freesurfer(reference) if args.aseg else table.to_index_labels(reference)[0]
        result = segment(image, model=args.model, device=args.device, tta=args.tta, progress=reporter.progress,
                         island_fraction=args.remove_islands)
        reporter.close()
        prediction = sitk.GetArrayFromImage(result.labels)
        spacing = tuple(reversed(image.GetSpacing()))
        case = Path(image_path).name.split(".")[0]
        case_rows = evaluate_labels(prediction, reference, spacing, table.names)
        for row in case_rows:
            row["case"] = case
        rows += case_rows
        scored = table.scored_indices
        print(f"{case}: mean Dice over the {len(scored)} scored structures {mean_over(case_rows, 'dice', scored):.4f}")
        for row in case_rows:
            note = "" if row["index"] in scored else "  (not scored)"
            print(f"  {row['structure']:28s} Dice {row['dice']:.3f}  HD95 {row['hd95_mm']:6.2f} mm  "
                  f"volume {row['volume_diff_percent']:+7.1f} %{note}")
    if args.csv:
        handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".csv", dir=Path(args.csv).parent)
        with os.fdopen(handle, "w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=["case"] + [k for k in rows[0] if k != "case"])
            writer.writeheader()
            writer.writerows(rows)
        os.replace(temporary, args.csv)
    return 0


def add_training_commands(commands) -> None:
    from . import _fraction  # cli imports this module inside build_parser, so no cycle at import

    train = commands.add_parser("train", help="train the network on synthetic brains made from label maps")
    train.add_argument("--label-maps", default=str(DEFAULT_DATA / "synthseg_label_maps"),
                       help="folder of label maps (or comma-separated files)")
    train.add_argument("--validation-maps", default="training_seg_19.nii.gz,training_seg_20.nii.gz",
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
    train.set_defaults(handler=run_train)

    evaluate = commands.add_parser("evaluate", help="Dice, HD95 and volume difference against reference labels")
    evaluate.add_argument("--images", nargs="+", required=True)
    evaluate.add_argument("--labels", nargs="+", required=True)
    evaluate.add_argument("--aseg", action="store_true", help="labels are FreeSurfer aseg values")
    evaluate.add_argument("--model")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--tta", action="store_true")
    evaluate.add_argument("--remove-islands", type=_fraction, default=0.0, metavar="FRACTION", help="as segment")
    evaluate.add_argument("--csv", help="write per-structure rows to this CSV")
    evaluate.set_defaults(handler=run_evaluate)
