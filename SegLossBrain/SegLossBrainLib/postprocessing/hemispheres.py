"""Left and right: a 19-structure labelmap -> FreeSurfer aseg values with each paired structure split by side.

The network labels left and right together (its training maps are mirrored at random), so the side is found
afterwards, in two steps:

1. **A mid-sagittal plane fitted to the segmentation.** Starting from the plane through the midline structures
   (3rd/4th ventricle, brainstem, optic chiasm) normal to the input axis closest to patient left, each compact
   paired structure (thalamus, caudate, putamen, pallidum, hippocampus, amygdala, accumbens, ventral DC, the
   ventricles) is split by the current plane; the difference of its left and right centroids gives the normal,
   their midpoint (with the midline structures' centroid) a point of the plane; repeated a few times. For mirror
   images the centroids' difference is exactly the normal, whatever the head's shape. Deep structures are not
   quite symmetric (2 degrees off on a dev scan), so a fine fit follows: in 12 mm columns across the plane,
   the midpoint of the left and right centroids of the tissue within 20 mm of the plane - where the brain fills
   both sides, so the midpoint sits on the fissure - and a least-squares plane through these midpoints and the
   midline structures, repeated a few times. The plane follows the head's tilt and position, not the scanner's.
2. **The fissure, not the plane.** Real midlines bend (occipital petalia, a shifted falx), so voxels more than
   ``margin_mm`` from the plane keep the plane's side and the rest are claimed by the two sides growing at
   once through the brain's paired-structure voxels (6-connected): a voxel goes to the side that reaches it
   first, i.e. along the tissue, so the two hemispheres meet where the tissue is thinnest - the fissure and
   the middle of the corpus callosum - rather than on the plane. Voxels neither side reaches (a detached
   piece) and ties keep the plane's side.

Measured against FreeSurfer's aseg sides on the real dev scans: BENCHMARKS.md, "Left and right".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..labels import CSF_INDEX, LabelTable, load_label_table
from ..preprocessing.grid import closest_axes

# Each half of these reaches the midline, so a tilted plane would bias their centroids (towards the head's
# longest axis): the fit uses the compact paired structures, whose halves lie apart, and the midline ones.
HEMISPHERE_WIDE = (1, 2, 5, 6)  # cerebral white matter and cortex, cerebellum white matter and cortex
MIN_SIDE_POINTS = 20
FIT_ITERATIONS = 4
COLUMN_MM = 12.0  # column width of the fine fit: ~12 columns across a brain each way
BAND_MM = 20.0  # the fine fit looks this far either side of the plane
MAX_FIT_POINTS = 400_000  # a subsample of the brain's voxels is plenty for a 3-parameter fit
MARGIN_MM = 8.0  # beyond this distance from the plane the plane decides; within it the tissue does


class HemisphereError(ValueError):
    """The labelmap holds too little of the paired structures to tell left from right."""


@dataclass(frozen=True)
class Plane:
    """``normal`` (unit, LPS, pointing to patient left) and a ``point`` on the plane, in mm."""

    normal: np.ndarray
    point: np.ndarray

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, float) - self.point) @ self.normal


def _index_to_physical(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """(matrix M, origin o) with physical = o + M @ (i, j, k)."""
    matrix = np.asarray(image.GetDirection(), float).reshape(3, 3) @ np.diag(image.GetSpacing())
    return matrix, np.asarray(image.GetOrigin(), float)


def _points(image: sitk.Image, indices_kji: np.ndarray) -> np.ndarray:
    matrix, origin = _index_to_physical(image)
    return indices_kji[:, ::-1].astype(float) @ matrix.T + origin


def fit_midsagittal_plane(labels: sitk.Image, table: LabelTable | None = None) -> Plane:
    """The mid-sagittal plane of a 19-structure labelmap (see the module's docstring, step 1)."""
    table = table or load_label_table()
    array = sitk.GetArrayViewFromImage(labels)
    paired = np.array([s.paired for s in table.structures])
    compact = np.array([s.paired and s.index not in HEMISPHERE_WIDE for s in table.structures])
    midline = np.array([s.index > 0 and not s.paired and s.index != CSF_INDEX for s in table.structures])
    indices = np.argwhere(paired[array] | midline[array])
    if len(indices) < 100:
        raise HemisphereError("the segmentation holds almost no brain structures, so left and right cannot be told")
    indices = indices[:: max(1, len(indices) // MAX_FIT_POINTS)]
    structure = array[tuple(indices.T)].astype(np.int64)
    points = _points(labels, indices)
    permutation, signs = closest_axes(labels.GetDirection())
    normal = np.asarray(labels.GetDirection(), float).reshape(3, 3)[:, permutation[0]] * signs[0]
    on_midline = midline[structure]
    point = points[on_midline].mean(axis=0) if on_midline.sum() >= 20 else points.mean(axis=0)
    plane = Plane(normal, point)
    deep = compact[structure] | on_midline
    for _ in range(FIT_ITERATIONS):
        plane = _refit(points[deep], structure[deep], on_midline[deep], plane, table.num_classes)
    for _ in range(FIT_ITERATIONS):
        plane = _fit_to_columns(points, structure, paired, on_midline, plane)
    return plane


def _refit(points, structure, on_midline, plane: Plane, classes: int) -> Plane:
    """One step: each compact structure's left and right centroids (split by ``plane``) give a direction
    (their difference) and a point (their midpoint); the midline structures' centroid is a point too."""
    left = plane.signed_distance(points) > 0

    def centroids(selected):
        count = np.bincount(structure[selected], minlength=classes).astype(float)
        sums = np.stack([np.bincount(structure[selected], points[selected, a], minlength=classes) for a in range(3)], 1)
        return count, sums / np.maximum(count, 1)[:, None]

    count_l, centre_l = centroids(~on_midline & left)
    count_r, centre_r = centroids(~on_midline & ~left)
    weight = np.minimum(count_l, count_r) * (np.minimum(count_l, count_r) >= MIN_SIDE_POINTS)
    if weight.sum() == 0:
        raise HemisphereError("no deep brain structure appears on both sides of the head, so left and right cannot "
                              "be told")
    difference = centre_l - centre_r
    length = np.linalg.norm(difference, axis=1)
    normal = (difference / np.maximum(length, 1e-9)[:, None] * weight[:, None]).sum(axis=0)
    normal /= np.linalg.norm(normal)
    midpoints = (centre_l + centre_r) / 2
    total, point = weight.sum(), (midpoints * weight[:, None]).sum(axis=0)
    if on_midline.any():  # as much say as the paired structures together
        point, total = point + points[on_midline].mean(axis=0) * weight.sum(), total + weight.sum()
    return Plane(normal, point / total)


def _fit_to_columns(points, structure, paired, on_midline, plane: Plane) -> Plane:
    """One step of the fine fit: in 12 mm columns across the plane, the midpoint of the left and right centroids
    of each paired structure's voxels within ``BAND_MM`` of the plane (within the band the brain fills both
    sides, so the midpoint sits on the fissure: a plane that is off or tilted moves towards it), plus the
    midline structures' column centroids; a weighted least-squares plane through them, outliers dropped."""
    distance = plane.signed_distance(points)
    near = np.abs(distance) < BAND_MM
    points, structure, distance, on_midline = points[near], structure[near], distance[near], on_midline[near]
    helper = np.array([0.0, 0.0, 1.0]) if abs(plane.normal[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(plane.normal, helper)
    u /= np.linalg.norm(u)
    v = np.cross(plane.normal, u)
    columns = [np.floor(points @ axis / COLUMN_MM).astype(np.int64) for axis in (u, v)]
    columns = [c - c.min() for c in columns]
    column = (structure * (columns[0].max() + 1) + columns[0]) * (columns[1].max() + 1) + columns[1]
    bins = int(column.max()) + 1

    def centroids(selected):
        count = np.bincount(column[selected], minlength=bins).astype(float)
        sums = np.stack([np.bincount(column[selected], points[selected, a], minlength=bins) for a in range(3)], 1)
        return count, sums / np.maximum(count, 1)[:, None]

    is_paired = paired[structure]
    count_l, centre_l = centroids(is_paired & (distance > 0))
    count_r, centre_r = centroids(is_paired & (distance <= 0))
    count_m, centre_m = centroids(on_midline)
    both = np.minimum(count_l, count_r)
    found, middle = both >= 3, count_m >= 3
    midpoints = np.concatenate([(centre_l[found] + centre_r[found]) / 2, centre_m[middle]])
    weights = np.concatenate([both[found], count_m[middle]])
    if len(weights) < 3:
        return plane
    keep = np.ones(len(weights), bool)
    for _ in range(2):  # weighted least squares, then again without the points more than 3 robust SDs off
        w = weights * keep
        centre = (midpoints * w[:, None]).sum(axis=0) / w.sum()
        centred = midpoints - centre
        normal = np.linalg.eigh((centred * w[:, None]).T @ centred)[1][:, 0]  # the direction the points lack
        normal *= np.sign(normal @ plane.normal) or 1.0
        residual = np.abs(centred @ normal)
        keep = residual <= max(3 * 1.4826 * np.median(residual[keep]), 2.0)
    return Plane(normal, centre)


def signed_distance_map(image: sitk.Image, plane: Plane) -> np.ndarray:
    """Signed distance (mm, positive = left) of every voxel centre of ``image``'s grid, as a [k, j, i] array."""
    matrix, origin = _index_to_physical(image)
    per_axis = plane.normal @ matrix  # mm of distance per step along i, j, k
    size = image.GetSize()
    i = np.arange(size[0], dtype=np.float32) * per_axis[0]
    j = np.arange(size[1], dtype=np.float32) * per_axis[1]
    k = np.arange(size[2], dtype=np.float32) * per_axis[2]
    offset = np.float32((origin - plane.point) @ plane.normal)
    return k[:, None, None] + j[None, :, None] + i[None, None, :] + offset


def left_side(labels: sitk.Image, plane: Plane, table: LabelTable | None = None,
              margin_mm: float = MARGIN_MM) -> np.ndarray:
    """Boolean [k, j, i]: True where a paired-structure voxel lies in the left hemisphere (step 2)."""
    table = table or load_label_table()
    array = sitk.GetArrayViewFromImage(labels)
    paired = np.array([s.paired for s in table.structures])[array]
    distance = signed_distance_map(labels, plane)
    left = paired & (distance > 0)
    if not paired.any():
        return left
    # Work in the bounding box of the band around the plane: the race happens there only.
    band = paired & (np.abs(distance) <= margin_mm)
    if not band.any():
        return left
    box = tuple(slice(max(a - 1, 0), b + 2) for a, b in zip(np.argwhere(band).min(0), np.argwhere(band).max(0)))
    tissue, d = paired[box], distance[box]
    claimed_left = tissue & (d > margin_mm)
    claimed_right = tissue & (d < -margin_mm)
    # Seeds also enter the box from outside it: voxels on the box faces that lie beyond the margin are seeds
    # already, and the band itself never reaches the faces along the plane's normal.
    open_ = tissue & ~claimed_left & ~claimed_right
    while open_.any():
        reach_left = _grow(claimed_left) & open_
        reach_right = _grow(claimed_right) & open_
        if not (reach_left.any() or reach_right.any()):
            break
        tie = reach_left & reach_right
        claimed_left |= (reach_left & ~tie) | (tie & (d > 0))
        claimed_right |= (reach_right & ~tie) | (tie & (d <= 0))
        open_ &= ~(reach_left | reach_right)
    region = left[box]
    region[tissue] = (claimed_left | (open_ & (d > 0)))[tissue]
    left[box] = region
    return left


def _grow(mask: np.ndarray) -> np.ndarray:
    """One 6-connected dilation step (numpy shifts: no scipy at run time)."""
    grown = mask.copy()
    for axis in range(3):
        front = [slice(None)] * 3
        back = [slice(None)] * 3
        front[axis], back[axis] = slice(1, None), slice(None, -1)
        grown[tuple(front)] |= mask[tuple(back)]
        grown[tuple(back)] |= mask[tuple(front)]
    return grown


def check_hemisphere_table(table: LabelTable | None = None) -> None:
    """Left/right output needs every structure's left and right aseg values in the label table."""
    table = table or load_label_table()
    missing = [s.name for s in table.structures if s.index > 0 and s.freesurfer_sides == (0, 0)]
    if missing:
        raise HemisphereError(
            f"--hemispheres needs left and right FreeSurfer values (columns FreeSurferLeft/FreeSurferRight) for "
            f"every structure of the label table {table.path}; missing for {', '.join(missing)}. Use the label "
            "table shipped with SegLossBrain, or run without --hemispheres")


def split_hemispheres(labels: sitk.Image, table: LabelTable | None = None,
                      margin_mm: float = MARGIN_MM) -> tuple[sitk.Image, Plane]:
    """(labelmap of FreeSurfer aseg values on ``labels``' grid, the fitted plane). Paired structures get their
    left or right aseg value, the others their single one (background 0)."""
    table = table or load_label_table()
    check_hemisphere_table(table)
    plane = fit_midsagittal_plane(labels, table)
    array = sitk.GetArrayViewFromImage(labels)
    left_values = np.array([s.freesurfer_sides[0] for s in table.structures], dtype=np.uint8)
    right_values = np.array([s.freesurfer_sides[1] for s in table.structures], dtype=np.uint8)
    values = np.where(left_side(labels, plane, table, margin_mm), left_values[array], right_values[array])
    result = sitk.GetImageFromArray(values.astype(np.uint8))
    result.CopyInformation(labels)
    return result, plane


def side_volumes_ml(sided: sitk.Image, table: LabelTable | None = None) -> dict:
    """Paired structure name -> (left mL, right mL), from a labelmap of FreeSurfer aseg values."""
    table = table or load_label_table()
    counts = np.bincount(sitk.GetArrayViewFromImage(sided).ravel(), minlength=256)
    voxel_ml = float(np.prod(sided.GetSpacing())) / 1000.0
    return {s.name: (counts[s.freesurfer_sides[0]] * voxel_ml, counts[s.freesurfer_sides[1]] * voxel_ml)
            for s in table.structures if s.paired}


def asymmetry_index(left: float, right: float) -> float:
    """(left - right) / mean of the two: 0 for equal sides, +/-2 when one side is empty; NaN when both are."""
    total = left + right
    return (left - right) / (total / 2) if total > 0 else float("nan")


SIDE_COLUMNS = ("left_ml", "right_ml", "asymmetry_index")  # a volumes table's columns for each paired structure


def side_cells(side_volumes: dict, name: str) -> list[str]:
    """The ``SIDE_COLUMNS`` cells of structure ``name`` in a volumes table (``segment --volumes``, the cohort's
    table): left and right mL and the asymmetry index, or three empty cells for an unpaired structure."""
    left, right = side_volumes.get(name, (None, None))
    if left is None:
        return ["", "", ""]
    return [f"{left:.3f}", f"{right:.3f}", f"{asymmetry_index(left, right):.4f}"]
