"""``seglossbrain evaluate``: Dice, HD95 and volume difference of the segmentation against reference labels."""
from __future__ import annotations

import csv
from pathlib import Path

from ..imageio.atomic import open_atomic
from .common import add_model_options


def run_evaluate(args, reporter) -> int:
    import SimpleITK as sitk

    from ..evaluation.metrics import evaluate_labels, mean_over
    from ..imageio.volumes import InputError, read_image, same_grid
    from ..inference.segment import segment
    from ..labels import load_label_table

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
                         island_fraction=args.remove_islands, precision=args.precision,
                         pial_refinement=args.pial_refinement)
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
            note = "" if row["index"] in scored else "  (left out of the mean)"
            print(f"  {row['structure']:28s} Dice {row['dice']:.3f}  HD95 {row['hd95_mm']:6.2f} mm  "
                  f"volume {row['volume_diff_percent']:+7.1f} %{note}")
    if args.csv:
        with open_atomic(args.csv, "w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=["case"] + [k for k in rows[0] if k != "case"])
            writer.writeheader()
            writer.writerows(rows)
    return 0


def add_evaluate_command(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="Dice, HD95 and volume difference against reference labels")
    evaluate.add_argument("--images", nargs="+", required=True, metavar="IMAGE",
                          help="MR volumes to segment and score (files or DICOM series folders)")
    evaluate.add_argument("--labels", nargs="+", required=True, metavar="LABELS",
                          help="reference labelmap of each image, in the same order and on the image's grid "
                               "(19-structure order, or FreeSurfer aseg values with --aseg)")
    evaluate.add_argument("--aseg", action="store_true",
                          help="the references are FreeSurfer aseg values; the mean then leaves out CSF and optic "
                               "chiasm, which aseg draws differently")
    add_model_options(evaluate, progress_json=False)
    evaluate.add_argument("--csv", help="write per-structure rows (Dice, HD95, volume difference) to this CSV")
    evaluate.set_defaults(handler=run_evaluate)
