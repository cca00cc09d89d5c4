"""Validation during training: Dice per structure on held-out synthetic brains and on real scans.

The checkpoint kept as "best" is chosen on the synthetic held-out maps only: the real dev scans are reported
to watch generalisation, never used to choose, so that they stay an honest check.

On the network's own 1.5 mm grid a real scan is segmented exactly as ``segment`` does and scored on its own
grid. A run on another grid (the loss study at 3 mm: ``synthesis["spacing_mm"]``) is scored at its own scale:
the image resampled linearly and its labels by nearest neighbour onto that grid (``preprocessing/grid.py``).
With ``validation_bn_samples`` the BatchNorm statistics are re-estimated on that many training samples (a
fixed draw) on a copy of the network before each validation: batch-1 running averages are noisy.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ..evaluation.metrics import dice_per_label
from ..preprocessing.grid_constants import NETWORK_SPACING_MM

VALIDATION_SEED = 20181  # fixed: every validation draws the same synthetic images


def _scored_mean(dice: np.ndarray, indices: list[int]) -> float:
    values = [dice[i] for i in indices if not np.isnan(dice[i])]
    return float(np.mean(values)) if values else float("nan")


def scores(prediction, reference, table) -> dict:
    """{"mean": mean Dice of the scored structures, "dice": {structure: Dice}} of two label arrays."""
    dice = dice_per_label(prediction, reference, table.num_classes)
    return {"mean": _scored_mean(dice, table.scored_indices),
            "dice": {table.names[i]: round(float(dice[i]), 4) for i in range(1, table.num_classes)}}


def held_out_draws(label_maps, size, device, synthesis: dict | None = None, draws: int = 1):
    """The fixed validation draw: (case name, image [1, D, H, W], target [D, H, W]), ``draws`` images per map
    (named ``<map>#<n>`` when more than one)."""
    from ..synthesis.generator import SynthesisSettings, SyntheticBrainGenerator

    settings = SynthesisSettings(**{**(synthesis or {}), "patch_size": tuple(size)})
    generator = SyntheticBrainGenerator(label_maps, settings, device=device)
    rng = torch.Generator().manual_seed(VALIDATION_SEED)
    for index, source in enumerate(generator.sources):
        for draw in range(draws):
            image, target = generator.sample(rng, source_index=index)
            yield (source.name if draws == 1 else f"{source.name}#{draw + 1}"), image, target


def synthetic_dice(network, table, label_maps, size, device, synthesis: dict | None = None, draws: int = 1) -> dict:
    per_map = {}
    network.eval()
    for name, image, target in held_out_draws(label_maps, size, device, synthesis, draws):
        with torch.inference_mode():
            prediction = network(image[None].to(device)).argmax(dim=1)[0].cpu().numpy()
        per_map[name] = scores(prediction, target.cpu().numpy(), table)
    return per_map


@lru_cache(maxsize=8)
def real_on_grid(image_path: str, labels_path: str, spacing: float) -> tuple[torch.Tensor, np.ndarray]:
    """(network input [1, 1, D, H, W], reference structure indices [D, H, W]) of a real scan and its aseg on the
    network grid planned at ``spacing`` mm: the image resampled linearly, the labels by nearest neighbour."""
    import SimpleITK as sitk

    from ..imageio.volumes import read_image
    from ..labels import load_label_table
    from ..preprocessing.grid import labels_to_grid, plan_network_grid, to_network

    image = read_image(image_path)
    grid = plan_network_grid(image, spacing)
    labels = labels_to_grid(sitk.Cast(read_image(labels_path), sitk.sitkInt32), grid)
    return to_network(image, grid), load_label_table().map_freesurfer(labels)


def real_dice(network, table, pairs, device, spacing: float | None = None) -> dict:
    import SimpleITK as sitk

    from ..imageio.volumes import read_image
    from ..inference.segment import segment

    results = {}
    for image_path, labels_path, name in pairs:
        if spacing is not None and abs(spacing - NETWORK_SPACING_MM) > 1e-6:
            tensor, reference = real_on_grid(str(image_path), str(labels_path), float(spacing))
            network.eval()
            with torch.inference_mode():
                labels = network(tensor.to(device)).argmax(dim=1)[0].cpu().numpy()
        else:
            reference = table.map_freesurfer(sitk.GetArrayFromImage(read_image(labels_path)))
            # force: a half-trained network may not find the brain yet; that is its score, not a bad input.
            labels = sitk.GetArrayFromImage(segment(read_image(image_path), model=network, device=str(device),
                                                    force=True).labels)
        results[name] = scores(labels, reference, table)
    return results


def validate(network, table, config, device, generator=None) -> dict:
    """Held-out synthetic and real Dice of ``network``; ``generator`` (the training samples) serves the BatchNorm
    re-estimation when ``config.validation_bn_samples`` asks for it (the network itself is left unchanged)."""
    was_training = network.training
    samples = getattr(config, "validation_bn_samples", 0)
    if samples and generator is not None:
        from .bn_recalibration import recalibrated_copy

        network = recalibrated_copy(network, generator, samples)
    spacing = config.synthesis.get("spacing_mm")
    result = {}
    try:
        if config.validation_maps:
            result["synthetic"] = synthetic_dice(network, table, config.validation_maps, config.validation_size,
                                                 device, config.synthesis, getattr(config, "validation_draws", 1))
        if config.real_pairs:
            result["real"] = real_dice(network, table, config.real_pairs, device, spacing)
    finally:
        network.train(was_training)
    synthetic_means = [v["mean"] for v in result.get("synthetic", {}).values()]
    real_means = [v["mean"] for v in result.get("real", {}).values()]
    result["synthetic_mean"] = float(np.mean(synthetic_means)) if synthetic_means else float("nan")
    result["real_mean"] = float(np.mean(real_means)) if real_means else float("nan")
    result["score"] = result["synthetic_mean"] if synthetic_means else result["real_mean"]
    return result
