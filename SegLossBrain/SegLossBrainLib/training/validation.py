"""Validation during training: Dice per structure on held-out synthetic brains and on real scans.

The checkpoint kept as "best" is chosen on the synthetic held-out maps only: the real dev scans are reported
to watch generalisation, never used to choose, so that they stay an honest check.
"""
from __future__ import annotations

import numpy as np
import torch

from ..evaluation.metrics import dice_per_label

VALIDATION_SEED = 20181  # fixed: every validation draws the same synthetic images


def _scored_mean(dice: np.ndarray, indices: list[int]) -> float:
    values = [dice[i] for i in indices if not np.isnan(dice[i])]
    return float(np.mean(values)) if values else float("nan")


def synthetic_dice(network, table, label_maps, size, device, synthesis: dict | None = None) -> dict:
    from ..synthesis.generator import SynthesisSettings, SyntheticBrainGenerator

    settings = SynthesisSettings(**{**(synthesis or {}), "patch_size": tuple(size)})
    generator = SyntheticBrainGenerator(label_maps, settings, device=device)
    rng = torch.Generator().manual_seed(VALIDATION_SEED)
    per_map = {}
    network.eval()
    for index, source in enumerate(generator.sources):
        image, target = generator.sample(rng, source_index=index)
        with torch.inference_mode():
            prediction = network(image[None].to(device)).argmax(dim=1)[0].cpu().numpy()
        dice = dice_per_label(prediction, target.cpu().numpy(), table.num_classes)
        per_map[source.name] = {"mean": _scored_mean(dice, table.scored_indices),
                                "dice": {table.names[i]: round(float(dice[i]), 4) for i in range(1, table.num_classes)}}
    return per_map


def real_dice(network, table, pairs, device) -> dict:
    import SimpleITK as sitk

    from ..imageio.volumes import read_image
    from ..inference.segment import segment

    results = {}
    for image_path, labels_path, name in pairs:
        image = read_image(image_path)
        reference = table.map_freesurfer(sitk.GetArrayFromImage(read_image(labels_path)))
        # force: a half-trained network may not find the brain yet; that is its score, not a bad input.
        labels = sitk.GetArrayFromImage(segment(image, model=network, device=str(device), force=True).labels)
        dice = dice_per_label(labels, reference, table.num_classes)
        results[name] = {"mean": _scored_mean(dice, table.scored_indices),
                         "dice": {table.names[i]: round(float(dice[i]), 4) for i in range(1, table.num_classes)}}
    return results


def validate(network, table, config, device) -> dict:
    was_training = network.training
    result = {}
    try:
        if config.validation_maps:
            result["synthetic"] = synthetic_dice(network, table, config.validation_maps, config.validation_size,
                                                 device, config.synthesis)
        if config.real_pairs:
            result["real"] = real_dice(network, table, config.real_pairs, device)
    finally:
        network.train(was_training)
    synthetic_means = [v["mean"] for v in result.get("synthetic", {}).values()]
    real_means = [v["mean"] for v in result.get("real", {}).values()]
    result["synthetic_mean"] = float(np.mean(synthetic_means)) if synthetic_means else float("nan")
    result["real_mean"] = float(np.mean(real_means)) if real_means else float("nan")
    result["score"] = result["synthetic_mean"] if synthetic_means else result["real_mean"]
    return result
