"""Structure volumes and the intracranial volume estimate, from a labelmap in the 19-structure order."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..labels import load_label_table


def structure_volumes_ml(labels: sitk.Image) -> dict:
    """Volume of each structure in mL (voxel count x voxel volume), by name, background excluded."""
    table = load_label_table()
    counts = np.bincount(sitk.GetArrayViewFromImage(labels).ravel(), minlength=table.num_classes)
    voxel_ml = float(np.prod(labels.GetSpacing())) / 1000.0
    return {s.name: float(counts[s.index]) * voxel_ml for s in table.structures if s.index > 0}


def intracranial_volume_ml(volumes_ml: dict) -> float:
    """Total intracranial volume estimate: the sum of every structure's volume. The model labels all CSF
    (the training maps label extra-cerebral CSF too), so brain + ventricles + CSF fill the intracranial space."""
    return float(sum(volumes_ml.values()))
