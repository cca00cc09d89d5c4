"""What there is to review: one scan (with its labels, or segmented on opening), or a ``batch`` results folder.

A case is an image, maybe its labels, and what the engine said about it (volumes, QC flags, model). A results
folder is read through the cohort's own table reader (``volumes.csv`` and its part tables); its cases are listed
with the QC-flagged ones first, most flags first, so the reviewer starts where the engine was least sure.
Plain Python: no Slicer, no trame.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Case:
    case_id: str
    image: Path
    labels: Path | None = None  # None: segment it with the active model when opened
    qc: list[str] = field(default_factory=list)  # warnings and "structure: reason" flags, as batch wrote them
    qc_known: bool = False  # the engine judged this result (batch/segment); else labels from a file
    model: str = ""
    status: str = "ok"
    reason: str = ""

    @property
    def flagged_structures(self) -> list[str]:
        return [item.split(":", 1)[0].strip() for item in self.qc if ":" in item]


def split_qc(text: str) -> list[str]:
    """``volumes.csv``'s ``qc`` cell (items joined by "; ", a structure's reasons joined by "; " too) -> items.

    A piece that does not start with a structure name (``name: reason``) continues the previous structure's
    reasons, so "thalamus: volume ...; mean confidence 0.6" stays one item."""
    from SegLossBrainLib.labels import load_label_table

    names = set(load_label_table().names)
    items: list[str] = []
    for piece in (p.strip() for p in (text or "").split(";")):
        if not piece:
            continue
        head = piece.split(":", 1)[0].strip()
        if items and ":" in items[-1] and head not in names and ":" not in piece:
            items[-1] += "; " + piece
        else:
            items.append(piece)
    return items


def results_folder_cases(folder: Path) -> list[Case]:
    """The cases of a ``batch`` output folder, QC-flagged first (most items first), then by case id.
    Cases that failed in ``batch`` are listed last with their reason (there is nothing to show)."""
    from SegLossBrainLib.inference.cohort_table import all_rows

    cases = []
    for case_id, row in all_rows(Path(folder)).items():
        labels = Path(folder) / row["labels"] if row.get("labels") else None
        cases.append(Case(case_id=case_id, image=Path(row.get("input", "")), labels=labels,
                          qc=split_qc(row.get("qc", "")), qc_known=True, model=row.get("model", ""),
                          status=row.get("status", ""), reason=row.get("reason", "")))
    return sorted(cases, key=lambda c: (c.status != "ok", -len(c.qc), c.case_id))


def is_results_folder(path: Path) -> bool:
    from SegLossBrainLib.inference.cohort_table import TABLE_NAME

    return path.is_dir() and (any(path.glob("volumes.part-*-of-*.csv")) or (path / TABLE_NAME).is_file())


def case_id_of(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".seg.nrrd", ".nii", ".nrrd", ".mha", ".mhd", ".mgz", ".mgh"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return name
