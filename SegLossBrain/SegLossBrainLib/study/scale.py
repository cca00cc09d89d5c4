"""Does every structure survive at the study's scale? Voxels per structure in the images the study scores.

A coarse grid (the converged study runs at 3 mm) shrinks the small structures to a few voxels; one that vanishes
from the held-out images cannot be scored there. ``structure_voxels`` counts each structure's voxels in the
fixed held-out synthetic draw (the images every validation and every evaluation use) and in the real scans'
labels on their study grid; ``smallest`` names the structure with the fewest voxels and ``missing`` the ones that
are absent from some image. ``study.json`` records the counts when a study is created; the report prints them.
"""
from __future__ import annotations

import numpy as np


def count_structures(target, table) -> dict:
    """{structure name: voxel count} of a label array of structure indices (background left out)."""
    counts = np.bincount(np.asarray(target).ravel().astype(np.int64), minlength=table.num_classes)
    return {table.names[i]: int(counts[i]) for i in range(1, table.num_classes)}


def structure_voxels(settings, table, device: str = "cpu") -> dict:
    """{"synthetic": {case: {structure: voxels}}, "real": {case: {...}}} at the study's grid."""
    from ..training.validation import held_out_draws, real_on_grid

    synthetic = {name: count_structures(target.cpu().numpy(), table)
                 for name, _, target in held_out_draws(settings.validation_maps, settings.validation_size, device,
                                                       settings.training_synthesis, settings.validation_draws)}
    real = {}
    for image, labels, name in settings.real_pairs:
        _, reference = real_on_grid(str(image), str(labels), settings.grid_spacing)
        real[name] = count_structures(reference, table)
    return {"synthetic": synthetic, "real": real}


def smallest(counts: dict, structures=None) -> tuple[str, int, str] | None:
    """(structure, voxels, case) with the fewest voxels over all cases (among ``structures`` when given)."""
    found = [(n, structure, case) for case, per in counts.items() for structure, n in per.items()
             if structures is None or structure in structures]
    if not found:
        return None
    n, structure, case = min(found)
    return structure, n, case


def missing(counts: dict, structures=None) -> dict:
    """{structure: [cases without a voxel of it]} (only structures missing somewhere)."""
    absent = {}
    for case, per in counts.items():
        for structure, n in per.items():
            if n == 0 and (structures is None or structure in structures):
                absent.setdefault(structure, []).append(case)
    return absent
