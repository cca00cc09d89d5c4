"""Structure volumes and the intracranial volume estimate, from a labelmap in the 19-structure order."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..labels import load_label_table


_SLAB = 1 << 20  # voxels counted at a time


def structure_volumes_ml(labels: sitk.Image) -> dict:
    """Volume of each structure in mL (voxel count x voxel volume), by name, background excluded."""
    table = load_label_table()
    # counted a slab at a time: bincount widens its input to int64, and a whole head's copy (8 bytes a voxel)
    # cost more than the counting
    flat = sitk.GetArrayViewFromImage(labels).ravel()
    counts = np.zeros(table.num_classes, dtype=np.int64)
    for start in range(0, flat.size, _SLAB):
        part = np.bincount(flat[start:start + _SLAB], minlength=table.num_classes)
        if part.size > counts.size:
            counts = np.pad(counts, (0, part.size - counts.size))
        counts[:part.size] += part
    voxel_ml = float(np.prod(labels.GetSpacing())) / 1000.0
    return {s.name: float(counts[s.index]) * voxel_ml for s in table.structures if s.index > 0}


def intracranial_volume_ml(volumes_ml: dict) -> float:
    """Total intracranial volume estimate: the sum of every structure's volume. The model labels all CSF
    (the training maps label extra-cerebral CSF too), so brain + ventricles + CSF fill the intracranial space."""
    return float(sum(volumes_ml.values()))
