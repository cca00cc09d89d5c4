"""Geometry of synthetic training samples: label maps placed in LPS physical space, and the random spatial
transform that maps the network's output grid (1.5 mm, identity direction) back into a label map.

Everything is sampled backwards, directly on the output grid: for each output voxel centre (mm, patch centre
at 0) we add a smooth displacement, apply a random linear map and a random centre, and land on a physical
point of the label map, which the label map's own affine (direction included) turns into a voxel index.
So an oblique or permuted input costs nothing extra and no intermediate 1 mm resampling is ever made.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..labels import CSF_INDEX, LabelError, load_label_table

# Values the training maps carry besides the label table's aseg values (data README): lesions 25/57 are in
# the table already (as white matter), vessels and the 5th ventricle are not; 136/137/163/164 and the
# 500-series are non-brain head tissues. All of them keep their own intensity class during generation.
# FreeSurfer's own asegs (the brain-only maps of fs_label_maps/) add 80, non-white-matter hypointensities.
_EXTRA_BRAIN_VALUES = (25, 57, 30, 62, 72, 80)
_EXTRA_NONBRAIN_VALUES = (136, 137, 163, 164)
_NONBRAIN_SERIES = range(500, 600)
_MAX_CODES = 256  # codes are stored as uint8 to keep 20 whole-head maps small on a GPU
_CENTRE_POINTS = 4096  # brain voxels kept per map to draw patch centres from


def known_generation_labels() -> frozenset:
    """All label values a training label map may hold: background, the table's aseg values and the
    extra brain / non-brain values of the training maps."""
    table = load_label_table()
    return frozenset({0} | table.freesurfer_values() | set(_EXTRA_BRAIN_VALUES) | set(_EXTRA_NONBRAIN_VALUES)
                     | set(_NONBRAIN_SERIES))


def _as_label_values(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 3:
        raise LabelError(f"a label map must be 3D, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        # several training maps are stored as float32: accept them when they hold whole numbers only
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise LabelError("label map holds non-integer values; is this an intensity image?")
    array = array.astype(np.int64, copy=False)
    if array.size and array.min() < 0:
        raise LabelError(f"label map has negative values (min {array.min()})")
    return array


class LabelMapSource:
    """One label map held on a device as compact uint8 codes, cropped to its non-zero box.

    ``values[c]`` is the generation label value of code ``c`` (code 0 is value 0), ``target_lut[c]`` its
    structure index 0..19, ``affine`` the 4x4 map from voxel index (i, j, k) -- ITK order, the reverse of the
    array's [k, j, i] -- to LPS millimetres, valid for the cropped ``codes``.
    """

    def __init__(self, codes: torch.Tensor, values: np.ndarray, affine: np.ndarray, brain_points: np.ndarray,
                 brain_low: np.ndarray, brain_high: np.ndarray, name: str = ""):
        self.codes = codes
        self.values = values
        self.affine = affine
        self.brain_points = brain_points
        self.brain_centroid = brain_points.mean(axis=0)  # of the (uniform) subsample: within ~1 mm of the full mean
        self.brain_low, self.brain_high = brain_low, brain_high
        self.name = name
        lut = load_label_table().map_freesurfer(values)
        self.target_lut = torch.as_tensor(lut.astype(np.int64), device=codes.device)

    @property
    def device(self) -> torch.device:
        return self.codes.device

    def to(self, device) -> "LabelMapSource":
        device = torch.device(device)
        if device == self.device:
            return self
        return LabelMapSource(self.codes.to(device), self.values, self.affine, self.brain_points, self.brain_low,
                              self.brain_high, self.name)

    @classmethod
    def load(cls, path, device="cpu", unknown_labels: str = "error") -> "LabelMapSource":
        """Read a label map with SimpleITK; its direction, spacing and origin define where it lies in LPS."""
        import SimpleITK as sitk

        image = sitk.ReadImage(str(path))
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise LabelError(f"{path}: a label map must be a 3D scalar image")
        matrix = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3) @ np.diag(image.GetSpacing())
        affine = np.eye(4)
        affine[:3, :3], affine[:3, 3] = matrix, image.GetOrigin()
        return cls.from_array(sitk.GetArrayFromImage(image), affine, device=device, unknown_labels=unknown_labels,
                              name=Path(path).name)

    @classmethod
    def from_array(cls, array: np.ndarray, affine: np.ndarray, device="cpu", unknown_labels: str = "error",
                   name: str = "array") -> "LabelMapSource":
        """``array`` is [k, j, i] (as ``sitk.GetArrayFromImage``); ``affine`` maps (i, j, k, 1) to LPS mm."""
        if unknown_labels not in ("error", "background"):
            raise ValueError(f"unknown_labels must be 'error' or 'background', got {unknown_labels!r}")
        affine = np.asarray(affine, dtype=np.float64)
        if affine.shape != (4, 4) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
            raise ValueError(f"affine must be an invertible 4x4 voxel-to-LPS matrix, got {affine!r}")
        labels = _as_label_values(array)
        # bincount instead of np.unique: a 256^3 map is counted in tens of ms rather than sorted in seconds
        counts = np.bincount(labels.ravel())
        present = np.flatnonzero(counts)
        known = known_generation_labels()
        unknown = [int(v) for v in present if int(v) not in known]
        if unknown and unknown_labels == "error":
            shown = ", ".join(str(v) for v in unknown[:30]) + (" ..." if len(unknown) > 30 else "")
            raise LabelError(
                f"{name}: label values {shown} are not known generation labels (FreeSurfer aseg values of the label "
                "table, 25/57 lesions, 30/62 vessels, 72 5th ventricle, 80 hypointensities, 136/137/163/164 and 500-599 "
                "non-brain); "
                "relabel them, or pass unknown_labels='background' to treat them as background air."
            )
        values = np.array([0] + [int(v) for v in present if v != 0 and int(v) not in unknown], dtype=np.int64)
        if len(values) > _MAX_CODES:
            raise LabelError(f"{name}: {len(values)} distinct labels, at most {_MAX_CODES} are supported")
        lut = np.zeros(len(counts), dtype=np.uint8)
        lut[values] = np.arange(len(values), dtype=np.uint8)
        codes = lut[labels]

        # crop to the non-zero box: outside it every sample reads background anyway
        nonzero = [np.flatnonzero(codes.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1))]
        if any(len(n) == 0 for n in nonzero):
            raise LabelError(f"{name}: the label map is empty (background only)")
        (k0, k1), (j0, j1), (i0, i1) = [(int(n[0]), int(n[-1]) + 1) for n in nonzero]
        codes = np.ascontiguousarray(codes[k0:k1, j0:j1, i0:i1])
        if codes.size >= 2 ** 31:  # sample_nearest gathers with int32 flat indices
            raise LabelError(f"{name}: {codes.shape} voxels inside the labelled box is too large; resample it first")
        affine = affine.copy()
        affine[:3, 3] = affine[:3, :3] @ np.array([i0, j0, k0], dtype=np.float64) + affine[:3, 3]

        # patch centres are drawn among brain voxels other than CSF (the training maps' CSF label extends far
        # beyond the brain); fall back to any labelled voxel for maps without brain structures
        structure = load_label_table().map_freesurfer(values)[codes]
        brain = (structure > 0) & (structure != CSF_INDEX)
        if not brain.any():
            brain = codes > 0
        kji = np.argwhere(brain)
        ijk = kji[:, ::-1].astype(np.float64)
        physical = ijk @ affine[:3, :3].T + affine[:3, 3]
        low, high = physical.min(axis=0), physical.max(axis=0)
        pick = np.random.default_rng(0).choice(len(physical), size=min(_CENTRE_POINTS, len(physical)), replace=False)
        points = physical[np.sort(pick)]
        return cls(torch.as_tensor(codes, device=torch.device(device)), values, affine, points, low, high, name)


def rotation_matrix(angles_rad) -> np.ndarray:
    """Rotation about x, then y, then z (radians)."""
    cx, cy, cz = np.cos(angles_rad)
    sx, sy, sz = np.sin(angles_rad)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def forward_linear(scales, angles_deg, shears) -> np.ndarray:
    """Linear part (source mm -> output mm) of the random affine: head scaled by ``scales`` (x, y, z), sheared
    by the six off-diagonal ``shears``, then rotated."""
    shear = np.eye(3)
    shear[~np.eye(3, dtype=bool)] = shears
    return rotation_matrix(np.deg2rad(angles_deg)) @ shear @ np.diag(scales)


def output_grid(patch_size, spacing_mm: float, device) -> torch.Tensor:
    """Output voxel centres [D, H, W, 3] in mm, channels (x, y, z) = (L, P, S), patch centre at 0."""
    axes = [(torch.arange(n, dtype=torch.float32, device=device) - (n - 1) / 2) * spacing_mm for n in patch_size]
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([xx, yy, zz], dim=-1)


def smooth_displacement(patch_size, spacing_mm: float, control_points: int, std_mm: float,
                        gen: torch.Generator, device, steps: int = 6) -> torch.Tensor:
    """A random diffeomorphic displacement [D, H, W, 3] in mm (channels x, y, z) on the output grid.

    A coarse Gaussian velocity field (``control_points`` along the longest axis) is integrated by scaling
    and squaring on a grid at a quarter of the patch resolution -- the field is smooth, so composing there
    is accurate and nearly free -- and only the result is upsampled to the patch.
    """
    longest = max(patch_size)
    coarse = [max(2, round(control_points * n / longest)) for n in patch_size]
    velocity = torch.randn((1, 3, *coarse), generator=gen, device=device) * std_mm
    # millimetres -> grid_sample's normalised units (align_corners: -1..1 spans first..last voxel centre)
    half_extent = torch.tensor([(n - 1) * spacing_mm / 2 for n in reversed(patch_size)], device=device)
    velocity = velocity / half_extent.view(1, 3, 1, 1, 1)
    work = [max(c, n // 4) for c, n in zip(coarse, patch_size)]
    disp = F.interpolate(velocity, size=work, mode="trilinear", align_corners=True) / (2 ** steps)
    identity = F.affine_grid(torch.eye(3, 4, device=device)[None], [1, 3, *work], align_corners=True)
    for _ in range(steps):
        where = identity + disp.permute(0, 2, 3, 4, 1)
        disp = disp + F.grid_sample(disp, where, mode="bilinear", padding_mode="border", align_corners=True)
    disp = F.interpolate(disp, size=list(patch_size), mode="trilinear", align_corners=True)
    return (disp * half_extent.view(1, 3, 1, 1, 1))[0].permute(1, 2, 3, 0)


def sample_nearest(source: LabelMapSource, points_mm: torch.Tensor, linear: np.ndarray,
                   centre_mm: np.ndarray) -> torch.Tensor:
    """Codes of ``source`` at ``linear @ p + centre_mm`` for the output points ``p`` ([..., 3] mm), by
    nearest neighbour (round half up, as ITK does); points outside the map read background (code 0).

    This is grid_sample(mode='nearest') written as an index gather, which lets the map stay uint8 on the
    device (a quarter of the memory of the float copy grid_sample needs) and skips the bilinear weights.
    """
    to_index = np.linalg.inv(source.affine)
    matrix = to_index[:3, :3] @ linear
    offset = to_index[:3, :3] @ centre_mm + to_index[:3, 3]
    dtype, device = points_mm.dtype, points_mm.device
    # one fused multiply-add for the whole [N, 3] x [3, 3] map; +0.5 then floor = round half up
    index = torch.addmm(torch.as_tensor(offset + 0.5, dtype=dtype, device=device), points_mm.reshape(-1, 3),
                        torch.as_tensor(matrix.T, dtype=dtype, device=device)).floor_()
    nk, nj, ni = source.codes.shape
    inside = ((index >= 0) & (index < torch.tensor([ni, nj, nk], dtype=dtype, device=device))).all(dim=1)
    index = index.to(torch.int32)  # int32 halves the memory traffic; maps are far below 2**31 voxels
    flat = ((index[:, 2] * nj + index[:, 1]) * ni + index[:, 0]).masked_fill_(~inside, 0)
    codes = source.codes.reshape(-1)[flat].masked_fill_(~inside, 0)
    return codes.reshape(points_mm.shape[:-1])


def patch_centre(source: LabelMapSource, patch_extent_mm: np.ndarray, pick: int, jitter_mm: np.ndarray) -> np.ndarray:
    """LPS point the patch centre lands on: the brain voxel ``pick``, pulled towards the brain centroid just
    enough that a patch smaller than the brain can still reach its edges but not wander off it, plus jitter.
    A patch larger than the brain is centred on the centroid (+ jitter)."""
    slack = np.maximum(source.brain_high - source.brain_low - patch_extent_mm, 0.0) / 2
    offset = np.clip(source.brain_points[pick] - source.brain_centroid, -slack, slack)
    return source.brain_centroid + offset + jitter_mm


__all__ = ["LabelMapSource", "known_generation_labels", "forward_linear", "output_grid", "smooth_displacement",
           "sample_nearest", "patch_centre", "rotation_matrix"]
