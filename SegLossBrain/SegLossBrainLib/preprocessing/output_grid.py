"""The isotropic output grid of ``--output-spacing``: its geometry and the limits on its spacing.

numpy only, so the Slicer module (which never imports torch or SimpleITK into Slicer's process) computes the same
grid the engine writes its labels on, and refuses the same spacings. Geometry is given as origin, voxel spacing,
direction (columns: the voxel axes) and size, in any one physical frame: the grid is built from them linearly,
so it is the same grid whether they are given in ITK's LPS or Slicer's RAS.
"""
from __future__ import annotations

import numpy as np

OUTPUT_SPACING_MM = (0.25, 10.0)  # finer is beyond any MR; coarser loses the small structures
MAX_OUTPUT_VOXELS = 1 << 29  # 512 M voxels: 2.5 GB of labels + confidence; a 0.25 mm head already needs 1 G


def isotropic_geometry(origin, voxel_spacing, direction, size, spacing: float) -> tuple[np.ndarray, tuple]:
    """(origin, size) of the grid of ``spacing`` mm with the input's axes (``direction``) that covers the input's
    field of view, voxel corner to voxel corner, centred on it: each axis gets ceil(extent / spacing) voxels."""
    direction = np.asarray(direction, dtype=float).reshape(3, 3)
    size = np.asarray(size, dtype=float)
    extent = size * np.asarray(voxel_spacing, dtype=float)  # mm along each input axis
    voxels = np.maximum(1, np.ceil(extent / spacing - 1e-6)).astype(int)
    # The first corner of the new grid sits (its extent - the old one) / 2 before the old grid's first corner.
    corner = np.asarray(origin, dtype=float) - direction @ (np.asarray(voxel_spacing, dtype=float) / 2)
    start = corner - direction @ ((voxels * spacing - extent) / 2)
    return start + direction @ np.full(3, spacing / 2), tuple(int(v) for v in voxels)


def output_spacing_problem(spacing, size=None, voxel_spacing=None) -> str | None:
    """Why ``spacing`` (mm) is no sensible isotropic output voxel (for a volume of ``size`` voxels of
    ``voxel_spacing`` mm, when given: a cohort checks the range before it reads any case), or None when it is."""
    low, high = OUTPUT_SPACING_MM
    try:
        spacing = float(spacing)
    except (TypeError, ValueError):
        return f"output spacing {spacing!r} is not a number; give an isotropic voxel size such as 1 (mm)"
    if not (np.isfinite(spacing) and low <= spacing <= high):
        return f"output spacing {spacing:g} mm is outside {low:g}-{high:g} mm; give an isotropic voxel size such as 1 (mm)"
    if size is None:
        return None
    voxels = float(np.prod(np.ceil(np.asarray(size) * np.asarray(voxel_spacing, dtype=float) / spacing - 1e-6)))
    if voxels > MAX_OUTPUT_VOXELS:
        return (f"output spacing {spacing:g} mm gives {voxels / 1e6:.0f} M voxels over the input's field of view (at "
                f"most {MAX_OUTPUT_VOXELS / 1e6:.0f} M); choose a larger spacing")
    return None
