"""Quality checks a reader needs before trusting a result: is there a brain at all, is it cut by the field of view,
and which structures look wrong.

* **No brain** (input QC): from the network-grid probabilities. The brain (every structure but CSF) of the real
  scans we have measures 1,280-1,600 mL with a mean confidence of 0.97 over it; a noisy ellipsoid phantom gets
  2 mL at 0.74 and a smooth random texture nothing (BENCHMARKS.md, "Input QC"). Outside ``BRAIN_ML`` or below
  ``MIN_BRAIN_CONFIDENCE`` the run stops with ``NoBrainError`` (exit 2) unless forced.
* **Cut by the field of view**: brain voxels on a face of the output grid (which covers the input's field of
  view) over more than ``CUT_AREA_MM2``: a warning naming the side of the head that is cut.
* **Per structure** (output QC): its volume relative to intracranial volume outside the range of real heads
  (``Resources/SegLossBrainVolumeRanges.csv``, made by ``bench/release/volume_ranges.py`` from the 20 training label
  maps: observed minimum / 1.5 to maximum x 1.5), or its mean confidence below ``LOW_CONFIDENCE``.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import SimpleITK as sitk

from ..evaluation.volumes import intracranial_volume_ml
from ..imageio.volumes import InputError
from ..labels import CSF_INDEX, load_label_table
from ..resources import resources_dir
from .class_maximum import class_maximum

BRAIN_ML = (400.0, 2500.0)  # an adult brain is 1,000-1,600 mL; a wide margin either way before "no brain"
MIN_BRAIN_CONFIDENCE = 0.85  # mean max-probability over the brain: 0.97 on real scans, 0.74 on a phantom
CUT_AREA_MM2 = 100.0  # 1 cm^2 of brain on a face of the field of view
LOW_CONFIDENCE = 0.75  # a structure's mean max-probability below this is flagged
VOLUME_RANGES_FILE = "SegLossBrainVolumeRanges.csv"
_SIDES = ("right", "left", "anterior", "posterior", "inferior", "superior")  # -x, +x, -y, +y, -z, +z in LPS


class NoBrainError(InputError):
    """The network found no brain in the input; ``--force`` segments it anyway."""


@dataclass
class QualityReport:
    brain_ml: float
    brain_confidence: float
    warnings: list[str] = field(default_factory=list)  # whole-result warnings (brain cut by the field of view)
    flags: dict = field(default_factory=dict)  # structure name -> "reason; reason" (flagged structures only)
    mean_confidence: dict = field(default_factory=dict)  # structure name -> mean max-probability


def brain_summary(probabilities, spacing_mm: float) -> tuple[float, float, dict]:
    """(brain volume mL, mean confidence over the brain, {structure index: mean confidence}) on the network grid.
    ``probabilities`` [C, D, H, W]: a numpy array or a CPU torch tensor."""
    confidence, labels = class_maximum(probabilities)
    labels, confidence = labels.ravel(), confidence.ravel()
    classes = np.asarray(probabilities).shape[0]
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    sums = np.bincount(labels, weights=confidence, minlength=classes)  # float64 sums
    brain = [c for c in range(1, classes) if c != CSF_INDEX]
    brain_count = float(counts[brain].sum())
    brain_confidence = float(sums[brain].sum() / brain_count) if brain_count else 0.0
    per_structure = {c: float(sums[c] / counts[c]) for c in range(1, classes) if counts[c] > 0}
    return brain_count * spacing_mm ** 3 / 1000.0, brain_confidence, per_structure


def check_brain(brain_ml: float, brain_confidence: float, force: bool) -> list[str]:
    """Raise NoBrainError when the input holds no brain (unless ``force``: then the reason becomes a warning)."""
    low, high = BRAIN_ML
    if low <= brain_ml <= high and brain_confidence >= MIN_BRAIN_CONFIDENCE:
        return []
    reason = (f"the network found {brain_ml:.0f} mL of brain (a head holds {low:.0f}-{high:.0f} mL) with a mean "
              f"confidence of {brain_confidence:.2f} (real scans: above {MIN_BRAIN_CONFIDENCE:.2f})")
    if force:
        return [f"no brain found: {reason}; segmented anyway (--force)"]
    raise NoBrainError(
        f"no brain found: {reason}. Check that the input is a head MR scan and that its header's spacing and "
        "orientation are right (a volume in cm, or a mask or map instead of the image, looks like this); "
        "--force segments it anyway")


def cut_sides(labels: sitk.Image) -> list[str]:
    """Sides of the head where brain (any structure but CSF, in the table's order) touches the field of view."""
    array = sitk.GetArrayViewFromImage(labels)
    direction = np.asarray(labels.GetDirection(), float).reshape(3, 3)
    spacing = labels.GetSpacing()
    sides = []
    for axis in range(3):  # i, j, k; array axis 2 - axis
        face_area = float(np.prod([spacing[a] for a in range(3) if a != axis]))
        for end, sign in ((0, -1.0), (-1, 1.0)):
            face = np.take(array, end, axis=2 - axis)
            brain = np.count_nonzero((face > 0) & (face != CSF_INDEX))
            if brain * face_area > CUT_AREA_MM2:
                outward = sign * direction[:, axis]
                lps = int(np.argmax(np.abs(outward)))
                sides.append(_SIDES[2 * lps + (outward[lps] > 0)])
    return sides


@lru_cache(maxsize=2)
def volume_ranges() -> dict:
    """Structure name -> (flag_low, flag_high) as fractions of intracranial volume."""
    with open(resources_dir() / VOLUME_RANGES_FILE, newline="") as handle:
        rows = csv.DictReader(line for line in handle if not line.startswith("#"))
        return {row["structure"]: (float(row["flag_low"]), float(row["flag_high"])) for row in rows}


def structure_flags(volumes_ml: dict, mean_confidence: dict) -> dict:
    """Structure name -> reasons it is flagged (volume / ICV outside real heads' range, low mean confidence)."""
    icv = intracranial_volume_ml(volumes_ml)
    ranges = volume_ranges()
    flags = {}
    for name, volume in volumes_ml.items():
        reasons = []
        low, high = ranges.get(name, (0.0, float("inf")))
        share = volume / icv if icv > 0 else 0.0
        if not low <= share <= high:
            reasons.append(f"volume {100 * share:.3f} % of ICV, outside {100 * low:.3f}-{100 * high:.3f} % "
                           "(20 training heads)")
        if name in mean_confidence and mean_confidence[name] < LOW_CONFIDENCE:
            reasons.append(f"mean confidence {mean_confidence[name]:.2f}")
        if reasons:
            flags[name] = "; ".join(reasons)
    return flags


def check_input(probabilities, spacing_mm: float, force: bool = False) -> QualityReport:
    """The no-brain check, on the network grid before anything is mapped back; NoBrainError unless forced."""
    brain_ml, brain_confidence, per_index = brain_summary(probabilities, spacing_mm)
    warnings = check_brain(brain_ml, brain_confidence, force)
    names = load_label_table().names
    confidence = {names[index]: value for index, value in per_index.items()}
    return QualityReport(brain_ml, brain_confidence, warnings, {}, confidence)


def check_output(report: QualityReport, labels: sitk.Image, volumes_ml: dict) -> QualityReport:
    """Adds the field-of-view warnings and the per-structure flags of the final labelmap to ``report``."""
    report.warnings += [f"the brain is cut by the field of view on the {side} side: structures there are incomplete"
                        for side in cut_sides(labels)]
    report.flags = structure_flags(volumes_ml, report.mean_confidence)
    return report
