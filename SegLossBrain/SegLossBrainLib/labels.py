"""The label table: 19 brain structures + background, in the product's fixed order.

One source of truth, `Resources/SegLossBrainLabels.csv`, a Slicer (>= 5.8) CSV colour table with
terminology columns plus columns of our own: ``FreeSurferLabels``, the FreeSurfer aseg values that merge
into each structure (left and right together; any aseg value not listed there maps to background), and
``FreeSurferLeft``/``FreeSurferRight``, the one aseg value of each side that ``--hemispheres`` writes (equal for
a structure aseg does not split: 3rd/4th ventricle, brainstem, CSF, optic chiasm).
"""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .resources import label_table_path

TERMINOLOGY_PARTS = ("Category", "Type", "TypeModifier", "Region", "RegionModifier")
CSF_INDEX = 16
FREESURFER_ASEG_MAX = 255  # FreeSurferColorLUT's aseg range; 1000+ are cortical parcellations
OPTIC_CHIASM_INDEX = 19
# SNOMED CT laterality, as Slicer's terminology and DICOM SEG carry it (the segmented property type modifier)
LATERALITY = {"left": ("SCT", "7771000", "Left"), "right": ("SCT", "24028007", "Right")}


class LabelError(ValueError):
    """A label map holds values that fit neither the 19-label order nor FreeSurfer aseg values."""


@dataclass(frozen=True)
class CodedEntry:
    scheme: str
    value: str
    meaning: str

    def __bool__(self) -> bool:
        return bool(self.value)

    def slicer_string(self) -> str:
        """``scheme^value^meaning`` as Slicer's terminology serialisation writes a coded entry."""
        return f"{self.scheme}^{self.value}^{self.meaning}" if self else "^^"


def terminology_string(terminology: dict) -> str:
    """Codes (part name -> CodedEntry) in Slicer's terminology-entry serialisation, as a Slicer >= 5.8 colour
    table gives it for the same CSV row: context~category~type~type modifier~anatomic context~region~region
    modifier~."""
    parts = [terminology[name].slicer_string() for name in ("Category", "Type", "TypeModifier")]
    regions = [terminology[name].slicer_string() for name in ("Region", "RegionModifier")]
    return "~" + "~".join(parts) + "~~" + "~".join(regions) + "~"


@dataclass(frozen=True)
class Structure:
    index: int
    name: str
    color: tuple[int, int, int]
    freesurfer_labels: tuple[int, ...]
    terminology: dict  # part name -> CodedEntry
    freesurfer_sides: tuple[int, int] = (0, 0)  # (left, right) aseg values; equal when aseg does not split it

    @property
    def paired(self) -> bool:
        return self.freesurfer_sides[0] != self.freesurfer_sides[1]

    def terminology_string(self) -> str:
        return terminology_string(self.terminology)


@dataclass(frozen=True)
class LabelTable:
    structures: tuple[Structure, ...]
    path: Path
    version: str  # hash of (index, name, FreeSurfer values): models record which label semantics they learnt

    @property
    def num_classes(self) -> int:
        return len(self.structures)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.structures]

    @property
    def colors(self) -> np.ndarray:
        return np.array([s.color for s in self.structures], dtype=np.uint8)

    @property
    def scored_indices(self) -> list[int]:
        """The 17 structures scored against FreeSurfer aseg: all but background, CSF and optic chiasm."""
        return [s.index for s in self.structures if s.index not in (0, CSF_INDEX, OPTIC_CHIASM_INDEX)]

    def index_of(self, name: str) -> int:
        """Structure index from a name, tolerant to case, spaces, underscores and hyphens."""
        key = _normalise_name(name)
        for s in self.structures:
            if _normalise_name(s.name) == key:
                return s.index
        raise KeyError(f"no structure named {name!r}; known names: {', '.join(self.names)}")

    def freesurfer_lookup(self, max_value: int) -> np.ndarray:
        """Lookup array ``lut[aseg_value] -> structure index`` for values 0..max_value."""
        lut = np.zeros(max_value + 1, dtype=np.uint8)
        for s in self.structures:
            for value in s.freesurfer_labels:
                if value <= max_value:
                    lut[value] = s.index
        return lut

    def freesurfer_values(self) -> set[int]:
        return {v for s in self.structures for v in s.freesurfer_labels}

    def map_freesurfer(self, labels: np.ndarray) -> np.ndarray:
        """FreeSurfer aseg values -> structure indices (uint8); values not in the table become background."""
        labels = np.asarray(labels)
        if labels.size and labels.min() < 0:
            raise LabelError(f"label map has negative values (min {labels.min()}); labels must be >= 0")
        lut = self.freesurfer_lookup(int(labels.max()) if labels.size else 0)
        return lut[labels.astype(np.int64)]

    def to_index_labels(self, labels: np.ndarray) -> tuple[np.ndarray, str]:
        """Detect the convention of a label map and return (indices 0..19 as uint8, convention).

        Values all within 0..19 are taken as this table's order ("index"); otherwise the map is read as
        FreeSurfer aseg ("freesurfer"): values the table merges become their structure, other aseg values
        (0..255 in FreeSurferColorLUT: vessels, 5th ventricle, hypointensities, ...) become background, as in
        ``map_freesurfer``. Values outside both (negative, or above 255 such as aparc cortical parcels) are
        listed in a LabelError.
        """
        values = set(int(v) for v in np.unique(labels))
        if values <= set(range(self.num_classes)):
            return np.asarray(labels).astype(np.uint8), "index"
        unknown = sorted(v for v in values if not 0 <= v <= FREESURFER_ASEG_MAX)
        # 1, 6, 9 and 19 are structure indices here but aseg values no segmentation tool writes in practice
        # (cerebral/cerebellar exterior, an unused thalamus code, insula): beside aseg values they betray
        # a map that mixes both conventions.
        index_only = sorted(v for v in values if 0 < v < self.num_classes and v not in self.freesurfer_values())
        if index_only and not unknown:
            raise LabelError(
                f"the label map mixes conventions: values {', '.join(map(str, index_only))} belong to the "
                f"19-structure order, values above {self.num_classes - 1} to FreeSurfer aseg; use one convention"
            )
        if unknown:
            shown = ", ".join(str(v) for v in unknown[:20]) + (" ..." if len(unknown) > 20 else "")
            raise LabelError(
                f"label values {shown} fit neither the 19-structure order (0..{self.num_classes - 1}) nor the "
                "FreeSurfer aseg values of the label table; relabel them (e.g. to 0 for background) first."
            )
        return self.map_freesurfer(labels), "freesurfer"


@dataclass(frozen=True)
class OutputSegment:
    """One segment of an output labelmap: the structures of the table (values 1..19), or with ``hemispheres``
    each paired structure's left and right (FreeSurfer aseg values) and the unpaired ones' single aseg value."""

    value: int
    name: str
    color: tuple[int, int, int]
    structure: Structure
    side: str = ""  # "left", "right" or "" (both / unpaired)
    terminology: dict = None  # part name -> CodedEntry, laterality in TypeModifier

    def terminology_string(self) -> str:
        return terminology_string(self.terminology)


def output_segments(table: LabelTable, hemispheres: bool = False) -> list[OutputSegment]:
    """The segments an output labelmap carries, in table order (left before right)."""
    segments = []
    for s in table.structures[1:]:
        if not hemispheres:
            segments.append(OutputSegment(s.index, s.name, s.color, s, "", s.terminology))
            continue
        if not s.paired:
            segments.append(OutputSegment(s.freesurfer_sides[0], s.name, s.color, s, "", s.terminology))
            continue
        for side, value in zip(("left", "right"), s.freesurfer_sides):
            terminology = dict(s.terminology, TypeModifier=CodedEntry(*LATERALITY[side]))
            segments.append(OutputSegment(value, f"{side.capitalize()} {s.name}", s.color, s, side, terminology))
    return segments


def _normalise_name(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _sides(row: dict, index: int, path: Path) -> tuple[int, int]:
    left, right = row.get("FreeSurferLeft", ""), row.get("FreeSurferRight", "")
    if not left and not right:  # an older table without side columns: no left/right output for this structure
        return (0, 0)
    try:
        return int(left), int(right)
    except ValueError:
        raise ValueError(f"{path}: row {index + 2} needs integer FreeSurferLeft and FreeSurferRight") from None


@lru_cache(maxsize=4)
def load_label_table(path: str | Path | None = None) -> LabelTable:
    path = Path(path) if path else label_table_path()
    data = path.read_bytes()
    rows = list(csv.DictReader(data.decode("utf-8").splitlines()))
    structures = []
    for expected, row in enumerate(rows):
        index = int(row["LabelValue"])
        if index != expected:
            raise ValueError(f"{path}: row {expected + 2} has LabelValue {index}, expected {expected} (fixed order)")
        terminology = {
            part: CodedEntry(
                row.get(f"{part}_CodingScheme", ""), row.get(f"{part}_CodeValue", ""), row.get(f"{part}_CodeMeaning", "")
            )
            for part in TERMINOLOGY_PARTS
        }
        structures.append(
            Structure(
                index=index,
                name=row["Name"],
                color=(int(row["Color_R"]), int(row["Color_G"]), int(row["Color_B"])),
                freesurfer_labels=tuple(int(v) for v in row.get("FreeSurferLabels", "").split()),
                terminology=terminology,
                freesurfer_sides=_sides(row, index, path),
            )
        )
    # Colours and terminology codes may be edited without invalidating trained models; order, names and the
    # aseg merge may not.
    semantics = "\n".join(f"{s.index}:{_normalise_name(s.name)}:{s.freesurfer_labels}" for s in structures)
    return LabelTable(tuple(structures), path, hashlib.sha256(semantics.encode()).hexdigest()[:12])
