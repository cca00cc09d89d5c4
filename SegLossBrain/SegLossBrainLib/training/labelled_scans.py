"""Real labelled scans (fine-tuning pairs; real scans mixed into training): (image, labelmap) files -> tensors on the network grid -> patches.

A pair is checked the way a user needs to hear about it: labels must fit the 19-structure order or
FreeSurfer aseg values (``LabelTable.to_index_labels``; unfit values are listed), must hold at least two
structures, and must share the image's grid unless ``resample_labels`` (nearest neighbour onto the image,
logged). The image then goes to the network grid exactly as at inference (``plan_network_grid`` +
``to_network`` of ``preprocessing/grid.py``) and the labels follow it by nearest neighbour, so the network is
fine-tuned on what it will see when segmenting. With ``soft_labels`` the pair also keeps soft targets
(``soft_targets``): each structure's share of every network voxel, since a 1 mm labelmap on the 1.5 mm grid
is partial volume at every boundary, which nearest neighbour turns into a staircase.

``PairSampler`` has the synthetic generator's ``batch(batch_size, rng)`` interface, so the training loop
(``training/trainer.py``) runs it unchanged. Augmentation is light on purpose (a few real cases, a model already trained on heavy
synthetic augmentation): a left-right mirror (every structure merges left and right, so the mirrored target
is still correct), gamma, a smooth bias field and noise. No rotations by default: the network grid aligns the
scan's axes to the training orientation. But the head is not always aligned with its scan's axes (a tilted
acquisition, a tilted patient), and a network trained on one real scan in one pose learns that pose with its
labels; ``rotation_deg``/``scaling`` turn each patch about its centre by a random rotation and per-axis scale
(image trilinear, labels nearest neighbour, both read from the whole volume so the corners are real data).
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
import torch

from ..imageio.volumes import InputError, check_image, read_image, same_grid
from ..labels import LabelError, load_label_table
from ..preprocessing import grid as grids
from ..synthesis.geometry import rotation_matrix
from ..synthesis.intensity import bias_field

MIN_STRUCTURES = 2  # fewer than this: nothing to learn that is not already the background
FEW_STRUCTURES = 10  # below this, warn: unlabelled structures are learnt as background
FOREGROUND_CROP_FRACTION = 0.7  # share of patches centred on a labelled voxel (few cases: do not waste steps)
# With focus points (fine-tuning: where the base model disagrees with the site's labels), this share of the
# patches is centred on one of them, and FOREGROUND_CROP_FRACTION applies to the rest: the steps go where
# there is something to learn instead of re-teaching what the model already draws the site's way.
FOCUS_CROP_FRACTION = 0.5
_MAX_FOREGROUND_POINTS = 200_000


@dataclass
class TrainingPair:
    name: str
    image_path: str
    labels_path: str
    image_sha256: str
    labels_sha256: str
    convention: str  # "index" (19-structure order) or "freesurfer" (aseg values)
    image: torch.Tensor  # [1, D, H, W] float32 in [0, 1] on the network grid
    labels: torch.Tensor  # [D, H, W] int64 structure indices on the network grid
    structures: list  # structure indices present (background excluded)
    soft: torch.Tensor | None = None  # [C, D, H, W] float16 structure shares on the network grid (soft_labels)

    def fingerprint(self) -> dict:
        return {"case": self.name, "image": Path(self.image_path).name, "image_sha256": self.image_sha256,
                "labels": Path(self.labels_path).name, "labels_sha256": self.labels_sha256,
                "label_convention": self.convention}


def fingerprint(path: str | os.PathLike) -> str:
    """sha256 of a volume file, or of a DICOM folder's files (names and contents, in sorted order)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def case_name(path: str | os.PathLike) -> str:
    return Path(path).name.split(".")[0] or Path(path).name


def _grid_difference(a: sitk.Image, b: sitk.Image) -> str:
    parts = []
    if a.GetSize() != b.GetSize():
        parts.append(f"size {b.GetSize()} vs {a.GetSize()}")
    if not np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-4):
        parts.append(f"spacing {tuple(round(s, 4) for s in b.GetSpacing())} vs {tuple(round(s, 4) for s in a.GetSpacing())}")
    if not np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3):
        parts.append(f"origin {tuple(round(v, 2) for v in b.GetOrigin())} vs {tuple(round(v, 2) for v in a.GetOrigin())}")
    if not np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-4):
        parts.append("direction")
    return ", ".join(parts) or "geometry"


def _index_labels(labels: sitk.Image, path, table) -> tuple[sitk.Image, str]:
    """The labelmap in the 19-structure order (uint8 image, same geometry) and the convention found."""
    if labels.GetNumberOfComponentsPerPixel() != 1 or labels.GetDimension() != 3:
        raise InputError(f"labels {path}: a 3D single-component labelmap is needed (got {labels.GetDimension()}D, "
                         f"{labels.GetNumberOfComponentsPerPixel()} components)")
    array = sitk.GetArrayViewFromImage(labels)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or not np.equal(np.mod(array, 1), 0).all():
            raise LabelError(f"labels {path} hold non-integer values: is it an image rather than a labelmap? "
                             "Give a labelmap with integer structure values")
    values = np.asarray(array).astype(np.int64)
    try:
        indices, convention = table.to_index_labels(values)
    except LabelError as error:
        raise LabelError(f"labels {path}: {_unfit_message(values, table) or error}") from None
    result = sitk.GetImageFromArray(indices)
    result.CopyInformation(labels)
    return result, convention


def _shown(values) -> str:
    values = sorted(values)
    return ", ".join(str(v) for v in values[:20]) + (" ..." if len(values) > 20 else "")


def _unfit_message(values: np.ndarray, table) -> str | None:
    """Name the values that fit neither convention, or say that the map mixes the two (to_index_labels
    lists everything outside the aseg values, which includes valid structure indices)."""
    found = set(int(v) for v in np.unique(values))
    index_values, aseg_values = set(range(table.num_classes)), table.freesurfer_values() | {0}
    neither = found - index_values - aseg_values
    if neither:
        return (f"label values {_shown(neither)} fit neither the 19-structure order (0..{table.num_classes - 1}) "
                "nor the FreeSurfer aseg values of the label table; relabel them (e.g. to 0 for background) first")
    only_index, only_aseg = found - aseg_values, found - index_values
    if only_index and only_aseg:
        return (f"the labelmap mixes conventions: values {_shown(only_index)} exist only in the 19-structure order, "
                f"values {_shown(only_aseg)} only among FreeSurfer aseg values; use one convention")
    return None


def _present(labels: np.ndarray, table) -> list[int]:
    counts = np.bincount(labels.ravel(), minlength=table.num_classes)
    return [i for i in range(1, table.num_classes) if counts[i] > 0]


def _check_structures(present: list[int], path, table, where: str = "") -> None:
    if not present:
        raise LabelError(f"labels {path} are empty{where}: only background; a fine-tuning case needs the "
                         "structures labelled")
    if len(present) < MIN_STRUCTURES:
        raise LabelError(f"labels {path} hold a single structure ({table.names[present[0]]}){where}; fine-tuning the "
                         f"19-structure model needs full segmentations (at least {MIN_STRUCTURES} structures), since "
                         "everything unlabelled is learnt as background")


def soft_targets(labels: sitk.Image, reference: sitk.Image, num_classes: int) -> torch.Tensor:
    """[C, D, H, W] float16: each structure's share of every voxel of ``reference``'s grid, from a labelmap of
    structure indices on a finer grid. Each structure's 0/1 mask is resampled linearly; from 1 mm onto 1.5 mm
    the linear (tent) kernel spans two source voxels, close to the 1.5 mm voxel's own extent, so the value is
    about the share of the voxel the structure covers. Outside the labelmap is background; shares sum to 1."""
    array = sitk.GetArrayViewFromImage(labels)
    shares = []
    for index in range(num_classes):
        mask = sitk.GetImageFromArray((array == index).astype(np.float32))
        mask.CopyInformation(labels)
        outside = 1.0 if index == 0 else 0.0
        shares.append(sitk.GetArrayFromImage(sitk.Resample(mask, reference, sitk.Transform(), sitk.sitkLinear,
                                                           outside, sitk.sitkFloat32)))
    result = torch.from_numpy(np.stack(shares)).clamp_(0, 1)
    return (result / result.sum(0, keepdim=True).clamp_min(1e-6)).half()


def load_pair(image_path, labels_path, resample_labels: bool = False,
              log: Callable[[str], None] | None = None, soft_labels: bool = False) -> TrainingPair:
    """Read, check and bring one (image, labelmap) pair to the network grid (with ``soft_labels``, also the
    soft targets of ``soft_targets``)."""
    log = log or (lambda message: None)
    table = load_label_table()
    image = read_image(image_path)
    check_image(image, name=f"image {image_path}")
    raw_labels = read_image(labels_path)
    labels, convention = _index_labels(raw_labels, labels_path, table)
    _check_structures(_present(sitk.GetArrayViewFromImage(labels), table), labels_path, table)
    if convention == "freesurfer":
        log(f"{Path(labels_path).name}: FreeSurfer aseg values found, mapped to the 19 structures")
    if not same_grid(image, labels):
        difference = _grid_difference(image, labels)
        if not resample_labels:
            raise InputError(f"labels {labels_path} are not on the grid of image {image_path} ({difference}); "
                             "resample them onto the image, or allow it (--resample-labels / resample_labels=True)")
        labels = sitk.Resample(labels, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        log(f"{Path(labels_path).name}: not on the image's grid ({difference}); resampled onto it by nearest "
            "neighbour")
    network_grid = grids.plan_network_grid(image)
    tensor = grids.to_network(image, network_grid)[0]
    on_grid = sitk.Resample(labels, network_grid.reference_image(), sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                            sitk.sitkUInt8)
    array = sitk.GetArrayFromImage(on_grid)
    present = _present(array, table)
    _check_structures(present, labels_path, table, where=" on the network grid (do labels and image overlap?)")
    if len(present) < FEW_STRUCTURES:
        log(f"{Path(labels_path).name}: only {len(present)} of {table.num_classes - 1} structures labelled; the "
            "others will be learnt as background there")
    soft = soft_targets(labels, network_grid.reference_image(), table.num_classes) if soft_labels else None
    return TrainingPair(case_name(image_path), str(image_path), str(labels_path), fingerprint(image_path),
                        fingerprint(labels_path), convention, tensor.float(), torch.from_numpy(array.astype(np.int64)),
                        present, soft)


def _points(mask: torch.Tensor) -> torch.Tensor:
    """[N, 3] voxel indices where ``mask`` is true (a strided subset of at most _MAX_FOREGROUND_POINTS: plenty to
    pick patch centres from)."""
    points = torch.nonzero(mask)
    if len(points) > _MAX_FOREGROUND_POINTS:
        points = points[:: math.ceil(len(points) / _MAX_FOREGROUND_POINTS)]
    return points


def _crop_or_pad(volume: torch.Tensor, start, size, value: float) -> torch.Tensor:
    """[..., D, H, W] window of ``size`` from ``start`` (may reach outside: padded with ``value``)."""
    spatial = volume.shape[-3:]
    pad, slices = [], []
    for axis in range(3):
        low, high = start[axis], start[axis] + size[axis]
        slices.append(slice(max(low, 0), min(high, spatial[axis])))
        pad.append((max(0, -low), max(0, high - spatial[axis])))
    window = volume[(..., *slices)]
    if any(a or b for a, b in pad):
        flat = [v for a, b in reversed(pad) for v in (a, b)]  # F.pad lists the last axis first
        window = torch.nn.functional.pad(window, flat, value=value)
    return window


class PairSampler:
    """Random patches from the training pairs, with light augmentation; ``batch`` as the synthetic generator."""

    def __init__(self, pairs: list[TrainingPair], patch_size, augment: bool = True, focus: list | None = None,
                 rotation_deg: float = 0.0, scaling: float = 0.0):
        """``focus``: per pair, a [D, H, W] bool mask of the voxels patches should favour (see
        FOCUS_CROP_FRACTION), or None. ``rotation_deg``: each patch turned by up to this many degrees about each
        axis; ``scaling``: and scaled by up to this fraction along each axis (both 0: patches as they lie)."""
        if not pairs:
            raise ValueError("no training pairs")
        if not (0 <= rotation_deg <= 45 and 0 <= scaling < 0.5):
            raise ValueError(f"rotation must lie in [0, 45] degrees and scaling in [0, 0.5), got {rotation_deg}, "
                             f"{scaling}")
        self.rotation_deg, self.scaling = float(rotation_deg), float(scaling)
        self.pairs, self.patch_size, self.augment = pairs, tuple(int(s) for s in patch_size), augment
        self.foreground = [_points(pair.labels > 0) for pair in pairs]
        self.focus = None
        if focus is not None:
            self.set_focus(focus)

    def set_focus(self, masks: list) -> None:
        """Favour patches centred on these voxels (per pair, a [D, H, W] bool mask; see FOCUS_CROP_FRACTION)."""
        if len(masks) != len(self.pairs):
            raise ValueError(f"{len(masks)} focus masks for {len(self.pairs)} pairs")
        self.focus = [_points(mask) for mask in masks]

    def _start(self, index: int, rng: torch.Generator) -> list[int]:
        shape = self.pairs[index].labels.shape
        draw = float(torch.rand(1, generator=rng))
        points = None
        if self.focus is not None:
            if draw < FOCUS_CROP_FRACTION and len(self.focus[index]):
                points = self.focus[index]
            elif (draw - FOCUS_CROP_FRACTION) / (1 - FOCUS_CROP_FRACTION) < FOREGROUND_CROP_FRACTION:
                points = self.foreground[index]
        elif draw < FOREGROUND_CROP_FRACTION:
            points = self.foreground[index]
        if points is not None:
            centre = points[int(torch.randint(len(points), (1,), generator=rng))].tolist()
            starts = [c - s // 2 for c, s in zip(centre, self.patch_size)]
        else:
            starts = [int(torch.randint(max(1, n - s + 1), (1,), generator=rng)) for n, s in zip(shape, self.patch_size)]
        # keep the window inside the volume where it fits, centred on it where it does not
        return [min(max(a, 0), n - s) if n >= s else (n - s) // 2 for a, n, s in zip(starts, shape, self.patch_size)]

    def _augment(self, image: torch.Tensor, labels: torch.Tensor, rng: torch.Generator):
        if float(torch.rand(1, generator=rng)) < 0.5:
            image, labels = torch.flip(image, dims=[-1]), torch.flip(labels, dims=[-1])  # x: left-right
        gamma = math.exp(0.2 * float(torch.randn(1, generator=rng)))
        image = image.clamp(0, 1).pow(gamma)
        field = bias_field(image.shape[-3:], 0.15 * float(torch.rand(1, generator=rng)), 4, rng, image.device)
        image = image * field[0]
        image = image + 0.03 * float(torch.rand(1, generator=rng)) * torch.randn(image.shape, generator=rng)
        return image.clamp(0, 1), labels

    def _turned(self, pair: TrainingPair, start, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The patch at ``start`` turned and scaled about its centre by a random draw, read from the whole volume
        (outside it: 0 and background, as ``_crop_or_pad`` pads)."""
        angles = np.deg2rad((torch.rand(3, generator=rng).double().numpy() * 2 - 1) * self.rotation_deg)
        scales = 1 + (torch.rand(3, generator=rng).double().numpy() * 2 - 1) * self.scaling
        matrix = rotation_matrix(angles) @ np.diag(scales)  # acts on (d, h, w) voxel offsets (isotropic grid)
        size = np.array(self.patch_size, dtype=np.float64)
        centre = np.array(start, dtype=np.float64) + (size - 1) / 2
        offsets = np.stack(np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in size], indexing="ij"), axis=-1)
        points = centre + offsets @ matrix.T  # (d, h, w) indices into the volume
        extent = np.array(pair.labels.shape[-3:], dtype=np.float64)
        normalised = 2 * points / np.maximum(extent - 1, 1) - 1
        grid = torch.as_tensor(normalised[..., ::-1].copy(), dtype=torch.float32)[None]  # grid_sample wants (x, y, z)
        sample = torch.nn.functional.grid_sample
        image = sample(pair.image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
        if pair.soft is None:
            labels = sample(pair.labels[None, None].float(), grid, mode="nearest", padding_mode="zeros",
                            align_corners=True)[0, 0].round().long()
        else:
            labels = sample(pair.soft[None].float(), grid, mode="bilinear", padding_mode="zeros",
                            align_corners=True)[0]
        return image, labels

    def sample(self, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        index = int(torch.randint(len(self.pairs), (1,), generator=rng))
        pair, start = self.pairs[index], self._start(index, rng)
        if self.rotation_deg or self.scaling:
            image, labels = self._turned(pair, start, rng)
        else:
            image = _crop_or_pad(pair.image, start, self.patch_size, 0.0)
            labels = _crop_or_pad(pair.labels if pair.soft is None else pair.soft, start, self.patch_size,
                                  0 if pair.soft is None else 0.0)
        if pair.soft is not None:  # shares; padding is background
            labels = labels.float()
            labels[0] = (1.0 - labels[1:].sum(0)).clamp_(min=0.0)
        if self.augment:
            image, labels = self._augment(image, labels, rng)
        return image.contiguous(), labels.contiguous()

    def batch(self, batch_size: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` patches: images [B, 1, D, H, W], targets [B, D, H, W] (int64), or [B, C, D, H, W]
        (float32 shares) for pairs loaded with soft labels."""
        samples = [self.sample(rng) for _ in range(batch_size)]
        return torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples])

    def label_frequencies(self, num_classes: int) -> torch.Tensor:
        counts = sum(torch.bincount(p.labels.flatten(), minlength=num_classes).double() for p in self.pairs)
        return counts / counts.sum()
