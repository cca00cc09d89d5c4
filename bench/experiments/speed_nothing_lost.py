"""Did the faster inference path lose anything? Today's path against the previous one, paired, same images.

    python bench/experiments/speed_nothing_lost.py [--draws 6] [--threads 2]

Previous path: the model as stored (BatchNorm layers separate), fp32 on the CPU, the network grid up to 240 mm
along the superior axis. Current path: ``segment``'s defaults (BatchNorm folded, ``--precision auto``: bf16 where
the CPU has it natively, the 216 mm height cap). Scored as the issue asks:
- the real dev scans with FreeSurfer labels (bert, voxelmorph): mean Dice of 17 against their aseg, per path;
- the unlabelled real dev scans (a skull-on head with neck, a cropped head): agreement of the two labelmaps;
- ``--draws`` x 2 held-out synthetic whole brains (maps 19-20, seed 555): mean Dice of 17 per path, paired;
- ``--draws`` synthetic whole heads with neck from held-out map 19 (its head is 222 mm tall, so the height cap
  crops it), 176^3 at 1.5 mm (264 mm field), each segmented end to end by both paths and scored on its own grid.
Prints the paired difference (current - previous) as mean ± s.e., wins, and the largest per-structure change.
"""
from __future__ import annotations

import argparse

import numpy as np
import SimpleITK as sitk
import torch

from held_out import SHIPPED_MODEL, held_out_dice
from SegLossBrainLib.device import resolve_precision
from SegLossBrainLib.evaluation.metrics import dice_per_label
from SegLossBrainLib.imageio.volumes import read_image
from SegLossBrainLib.inference import segment as inference
from SegLossBrainLib.labels import load_label_table
from SegLossBrainLib.models.files import load_model
from SegLossBrainLib.networks.inference_graph import fused_for_inference
from SegLossBrainLib.paths import REAL_DEV, REAL_DEV_SCANS, find_data_dir
from SegLossBrainLib.preprocessing import grid as grids

UNLABELLED = ("mne_sample_T1_skull_unlabeled.nii.gz", "brainchop_t1_crop_unlabeled.nii.gz")


def previous_network():
    network, _ = load_model(SHIPPED_MODEL)
    return network.eval().to(memory_format=torch.channels_last_3d)


def segment_previous(image: sitk.Image, network) -> np.ndarray:
    cap = grids.MAX_GRID_HEIGHT_VOXELS
    grids.MAX_GRID_HEIGHT_VOXELS = grids.MAX_GRID_VOXELS  # the previous 240 mm
    try:
        result = inference.segment(image, model=network, device="cpu", precision="fp32", force=True)
    finally:
        grids.MAX_GRID_HEIGHT_VOXELS = cap
    return sitk.GetArrayFromImage(result.labels)


def segment_current(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(inference.segment(image, model=SHIPPED_MODEL, device="cpu", precision="auto",
                                                    force=True).labels)


def summary(name: str, previous: np.ndarray, current: np.ndarray, names: list[str]) -> None:
    """``previous``/``current``: Dice [image, class]."""
    table = load_label_table()
    scored = table.scored_indices
    a, b = np.nanmean(previous[:, scored], 1), np.nanmean(current[:, scored], 1)
    diff = b - a
    se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
    per_structure = np.nanmean(current[:, scored] - previous[:, scored], 0)
    worst = int(np.argmax(np.abs(per_structure)))
    print(f"| {name} | {len(diff)} | {a.mean():.4f} | {b.mean():.4f} | {100 * diff.mean():+.3f} ± {100 * se:.3f} | "
          f"{int((diff > 0).sum())}/{int((diff < 0).sum())} | {names[scored[worst]]} {100 * per_structure[worst]:+.2f} |")


def arguments(description: str):
    """(parsed --draws/--threads, the label table, the real dev folder), torch's threads set: the set-up this
    comparison shares with ``engine_nothing_lost.py``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--draws", type=int, default=6, help="images per held-out map")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args, load_label_table(), find_data_dir() / REAL_DEV


def main() -> None:
    args, table, data = arguments(__doc__.splitlines()[0])
    previous_net = previous_network()
    current_net = fused_for_inference(previous_net)
    dtype = torch.bfloat16 if resolve_precision("auto", torch.device("cpu")) == "bf16" else None
    print(f"current path's precision on this CPU: {'bf16' if dtype else 'fp32'}\n")

    real_previous, real_current = [], []
    for case, image_name, aseg_name in REAL_DEV_SCANS:
        image = read_image(str(data / image_name))
        reference = table.map_freesurfer(sitk.GetArrayFromImage(read_image(str(data / aseg_name))))
        real_previous.append(dice_per_label(segment_previous(image, previous_net), reference, table.num_classes))
        real_current.append(dice_per_label(segment_current(image), reference, table.num_classes))
    for name in UNLABELLED:
        image = read_image(str(data / name))
        before, after = segment_previous(image, previous_net), segment_current(image)
        brain = (before > 0) | (after > 0)
        agreement = (before[brain] == after[brain]).mean()
        print(f"{name}: labels agree on {100 * agreement:.3f} % of the voxels either path calls brain or CSF; "
              f"grid before {'x'.join(map(str, before.shape))} input voxels")

    def both(image):
        with torch.inference_mode():
            x = image[None].contiguous(memory_format=torch.channels_last_3d)
            before = previous_net(x).argmax(1)[0].numpy()
            with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                after = current_net(x).float().argmax(1)[0].numpy()
        return {"previous": before, "current": after}

    synthetic = held_out_dice(both, args.draws, seed=555)
    heads = whole_heads(previous_net, args.draws, table)
    print("\n| images | n | previous mean17 | current mean17 | paired diff (points) | better/worse | largest "
          "structure change (points) |\n|---|---|---|---|---|---|---|")
    summary("real dev scans (bert, voxelmorph)", np.array(real_previous), np.array(real_current), table.names)
    summary("held-out synthetic whole brains", synthetic["previous"], synthetic["current"], table.names)
    summary("synthetic whole heads with neck (map 19)", heads["previous"], heads["current"], table.names)


def whole_heads(previous_net, draws: int, table) -> dict:
    """Dice [image, class] of both paths on whole-head images of map 19 (no spatial augmentation)."""
    from SegLossBrainLib.paths import label_maps_dir
    from SegLossBrainLib.synthesis.generator import SynthesisSettings, SyntheticBrainGenerator

    settings = SynthesisSettings(patch_size=(176, 176, 176)).without_augmentation()
    generator = SyntheticBrainGenerator([str(label_maps_dir() / "training_seg_19.nii.gz")], settings)
    rng = torch.Generator().manual_seed(556)
    scores = {"previous": [], "current": []}
    for _ in range(draws):
        image, target = generator.sample(rng, source_index=0)
        volume = sitk.GetImageFromArray(image[0].numpy() * 1000)
        volume.SetSpacing([settings.spacing_mm] * 3)
        for name, labels in (("previous", segment_previous(volume, previous_net)), ("current", segment_current(volume))):
            scores[name].append(dice_per_label(labels, target.numpy(), table.num_classes))
    return {name: np.array(values) for name, values in scores.items()}


if __name__ == "__main__":
    main()
