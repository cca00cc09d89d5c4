"""Ship a trained model: copy a run's compact weights into Resources/Models and write its model card.

    python bench/release/ship_model.py runs/explog64/best.safetensors [--name wong2018-explog] [--hardware "..."]

The card records data, generator settings, loss and parameters, steps, wall time, hardware, the training
curves and the per-structure Dice on each real dev scan (evaluated here, at shipping time, with
``seglossbrain evaluate``'s code). This is a developer action: it deliberately replaces the shipped files.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
from pathlib import Path

import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]
CARD_NAMES = {"bert": "bert", "vxm": "voxelmorph test"}  # the dev scans as the model card names them


def evaluate_dev(model_path: Path) -> dict:
    from SegLossBrainLib.evaluation.metrics import evaluate_labels, mean_over
    from SegLossBrainLib.imageio.volumes import read_image
    from SegLossBrainLib.inference.segment import segment
    from SegLossBrainLib.labels import load_label_table
    from SegLossBrainLib.paths import REAL_DEV, REAL_DEV_SCANS, find_data_dir

    table = load_label_table()
    results = {}
    dev = (find_data_dir() or Path("no data folder")) / REAL_DEV  # scans not found are left out, as before
    for case, image_file, labels_file in REAL_DEV_SCANS:
        name = CARD_NAMES[case]
        if not (dev / image_file).is_file():
            continue
        image = read_image(dev / image_file)
        reference = table.map_freesurfer(sitk.GetArrayFromImage(read_image(dev / labels_file)))
        prediction = sitk.GetArrayFromImage(segment(image, model=str(model_path), device="cpu").labels)
        rows = evaluate_labels(prediction, reference, tuple(reversed(image.GetSpacing())), table.names)
        results[name] = {"rows": rows, "mean17": mean_over(rows, "dice", table.scored_indices),
                         "min17": min(r["dice"] for r in rows if r["index"] in table.scored_indices),
                         "weakest": min((r for r in rows if r["index"] in table.scored_indices),
                                        key=lambda r: r["dice"])["structure"]}
    return results


def card(meta: dict, dev: dict, name: str, hardware: str, curves: str | None) -> str:
    loss = meta.get("loss", {})
    lines = [f"# Model card: {name}", "",
             f"- **Status**: {meta.get('status', 'released')}"
             + (f" — {meta['status_note']}" if meta.get("status_note") else ""),
             f"- **Architecture**: {meta.get('architecture')} (Wong et al., MICCAI 2018), "
             f"{meta.get('num_classes')} classes, label table {meta.get('label_table_version')}",
             f"- **Loss**: {loss.get('name')} {json.dumps(loss.get('params', {}))}; label weights "
             f"w_l = (sum f / f_l)^0.5 from the training maps' label frequencies",
             f"- **Optimiser**: {meta.get('optimizer')}, learning rate {meta.get('learning_rate')}"
             + (f", {meta['lr_schedule']} schedule" if meta.get("lr_schedule", "constant") != "constant" else "")
             + (f" after {meta['warmup_steps']} warm-up steps" if meta.get("warmup_steps") else "") + ", batch 1"
             + (f"; network input noise std {meta['input_noise_std']} x image std"
                if meta.get("input_noise_std") is not None else ""),
             f"- **Steps**: {meta.get('steps')} on {meta.get('patch_size')} patches at 1.5 mm; wall time "
             f"{meta.get('wall_time_s', 0) / 3600:.2f} h of training steps on {hardware}"
             + (f"; started from {meta['init_weights']}" if meta.get("init_weights") else ""),
             f"- **Training data**: synthetic images drawn at every step from {len(meta.get('training_data', []))} "
             "real whole-head label maps (SynthSeg training maps 01-18); maps 19 and 20 held out for validation",
             f"- **Generator settings**: defaults of `SynthesisSettings` {json.dumps(meta.get('synthesis', {}))}",
             f"- **Weights**: float16 safetensors, sha256 `{meta.get('sha256')}`"]
    recalibration = meta.get("batchnorm_recalibration")
    if recalibration:
        lines.append(f"- **BatchNorm statistics**: recalibrated after training on {recalibration['samples']} fresh "
                     f"synthetic {tuple(recalibration['patch_size'])} samples from the training maps (held-out "
                     f"synthetic Dice {recalibration['held_out_dice_before']:.3f} -> "
                     f"{recalibration['held_out_dice_after']:.3f}; kept because of that, dev scans not consulted)")
    lines.append("")
    if curves:
        lines += [f"![training curves]({curves})", ""]
    lines += ["## Dice on the real dev scans (FreeSurfer aseg as reference)", "",
              "Mean over the 17 scored structures; CSF and optic chiasm are reported apart (aseg's CSF is not the "
              "training maps' CSF). These two scans are development checks, not a benchmark: they were not used to "
              "choose the checkpoint.", ""]
    names = [r["structure"] for r in next(iter(dev.values()))["rows"]] if dev else []
    lines.append("| structure | " + " | ".join(dev) + " |")
    lines.append("|---|" + "---|" * len(dev))
    for index, structure in enumerate(names):
        lines.append(f"| {structure} | " + " | ".join(f"{dev[c]['rows'][index]['dice']:.3f}" for c in dev) + " |")
    lines.append("| **mean of 17 scored** | " + " | ".join(f"**{dev[c]['mean17']:.3f}**" for c in dev) + " |")
    lines.append("| lowest of 17 scored | " + " | ".join(f"{dev[c]['min17']:.3f}" for c in dev) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("weights", type=Path)
    parser.add_argument("--name", default="wong2018-explog")
    parser.add_argument("--hardware", default=f"{platform.processor() or platform.machine()}, 2 CPU cores")
    parser.add_argument("--status", default="preliminary", choices=["preliminary", "released"],
                        help="preliminary: below the quality target; segment prints a note with every result")
    args = parser.parse_args()
    from SegLossBrainLib.imageio.atomic import atomic_path
    from SegLossBrainLib.models.files import load_model, metadata_path, read_metadata

    load_model(args.weights)  # refuses anything corrupted or mismatched before it is shipped
    meta = read_metadata(args.weights)
    meta["hardware"] = args.hardware
    meta["status"] = args.status
    target = ROOT / "Resources" / "Models" / f"{args.name}.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as temporary:
        shutil.copyfile(args.weights, temporary)
    metadata_path(target).write_text(json.dumps(meta, indent=2))
    curves_source = args.weights.parent / "curves.png"
    curves = None
    if curves_source.is_file():
        shutil.copyfile(curves_source, ROOT / "docs" / "images" / f"{args.name}_curves.png")
        curves = f"../../docs/images/{args.name}_curves.png"
    dev = evaluate_dev(target)
    if dev:
        means = ", ".join(f"{case} {result['mean17']:.2f}" for case, result in dev.items())
        meta["dev_dice_mean17"] = {case: round(result["mean17"], 4) for case, result in dev.items()}
        if args.status == "preliminary":
            weakest = ", ".join(f"{case} {result['weakest']} {result['min17']:.2f}" for case, result in dev.items())
            meta["status_note"] = (f"mean Dice over 17 structures on the real dev scans: {means} (target 0.80); "
                                   f"weakest: {weakest} (target 0.60 each); review every result")
        metadata_path(target).write_text(json.dumps(meta, indent=2))  # sha256 unchanged: weights untouched
    (target.parent / f"{args.name}.md").write_text(card(meta, dev, args.name, args.hardware, curves))
    for case, result in dev.items():
        print(f"{case}: mean Dice (17) {result['mean17']:.3f}, lowest {result['min17']:.3f}")


if __name__ == "__main__":
    main()
