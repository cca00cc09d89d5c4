"""Per-structure Dice, 95 % Hausdorff distance and volume difference, on label arrays with a known spacing.

Conventions (stated because tools differ): Dice of a structure absent from both maps is NaN (not scored,
left out of means); HD95 is the larger of the two directed 95th-percentile surface distances in mm
(prediction to reference and back, as MONAI and most challenges compute it; surface = the structure's voxels
with a 6-neighbour outside it), NaN when either map lacks the structure;
volume difference is (predicted − reference) / reference in percent.
"""
from __future__ import annotations

import numpy as np


def dice_per_label(prediction: np.ndarray, reference: np.ndarray, num_classes: int) -> np.ndarray:
    """Dice of every label 0..num_classes-1 (NaN where absent from both)."""
    prediction = np.asarray(prediction).ravel().astype(np.int64)
    reference = np.asarray(reference).ravel().astype(np.int64)
    both = np.bincount(prediction * num_classes + reference, minlength=num_classes * num_classes)
    confusion = both.reshape(num_classes, num_classes)  # [predicted, reference]
    intersection = np.diag(confusion).astype(float)
    sizes = confusion.sum(axis=0) + confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sizes > 0, 2 * intersection / sizes, np.nan)


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1), border_value=0)


def hausdorff95(prediction: np.ndarray, reference: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> float:
    """95 % Hausdorff distance (mm) between two boolean masks ([k, j, i] arrays with ``spacing`` given in the
    same axis order): max of the directed 95th-percentile surface distances."""
    from scipy import ndimage

    prediction, reference = np.asarray(prediction, bool), np.asarray(reference, bool)
    if not prediction.any() or not reference.any():
        return float("nan")
    # Only the bounding box of both masks (plus a margin) matters: keeps this fast on 256^3 volumes.
    both = np.argwhere(prediction | reference)
    low, high = np.maximum(both.min(axis=0) - 2, 0), both.max(axis=0) + 3
    box = tuple(slice(a, b) for a, b in zip(low, high))
    prediction, reference = prediction[box], reference[box]
    surface_p, surface_r = _surface(prediction), _surface(reference)
    distance_to_r = ndimage.distance_transform_edt(~surface_r, sampling=spacing)
    distance_to_p = ndimage.distance_transform_edt(~surface_p, sampling=spacing)
    return float(max(np.percentile(distance_to_r[surface_p], 95), np.percentile(distance_to_p[surface_r], 95)))


def evaluate_labels(prediction: np.ndarray, reference: np.ndarray, spacing, names: list[str],
                    with_hausdorff: bool = True) -> list[dict]:
    """One row per structure (background excluded): name, dice, hd95_mm, volume_diff_percent, volumes."""
    num_classes = len(names)
    dice = dice_per_label(prediction, reference, num_classes)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    predicted_counts = np.bincount(np.asarray(prediction).ravel(), minlength=num_classes)
    reference_counts = np.bincount(np.asarray(reference).ravel(), minlength=num_classes)
    rows = []
    for index in range(1, num_classes):
        hd95 = hausdorff95(prediction == index, reference == index, spacing) if with_hausdorff else float("nan")
        reference_ml = reference_counts[index] * voxel_ml
        predicted_ml = predicted_counts[index] * voxel_ml
        difference = 100.0 * (predicted_ml - reference_ml) / reference_ml if reference_ml > 0 else float("nan")
        rows.append({"index": index, "structure": names[index], "dice": float(dice[index]), "hd95_mm": hd95,
                     "volume_predicted_ml": predicted_ml, "volume_reference_ml": reference_ml,
                     "volume_diff_percent": difference})
    return rows


def mean_over(rows: list[dict], key: str, indices: list[int]) -> float:
    values = [row[key] for row in rows if row["index"] in indices and not np.isnan(row[key])]
    return float(np.mean(values)) if values else float("nan")
