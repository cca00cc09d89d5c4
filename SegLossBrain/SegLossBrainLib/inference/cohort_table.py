"""The cohort's one table, ``volumes.csv``: a row per case with its status, time, model, every structure's volume
and the intracranial volume estimate.

Each worker (the only one, a torchrun rank or a ``--shard``) owns one table file and rewrites it whole after
every case, to a temporary file renamed into place: an interruption loses at most the case in flight, never a
row already written. With several workers each writes ``volumes.part-K-of-N.csv`` and the rows are merged into
``volumes.csv`` (the newest row of each case wins) by rank 0, or by every shard at its end under a file lock.
"""
from __future__ import annotations

import csv
import os
from contextlib import contextmanager
from pathlib import Path

from ..imageio.atomic import open_atomic
from ..imageio.volumes import InputError
from ..labels import load_label_table
from ..postprocessing import hemispheres
from ..postprocessing.hemispheres import SIDE_COLUMNS

TABLE_NAME = "volumes.csv"
ICV_COLUMN = "intracranial_volume_ml"
_FIXED_COLUMNS = ["case_id", "input", "status", "reason", "qc", "seconds", "model", "model_sha256", "labels",
                  "settings", "finished"]


def structure_column(name: str, column: str = "ml") -> str:
    """``cerebral white matter`` -> ``cerebral_white_matter_ml`` (or ``_left_ml`` ... for ``column``): a column
    name that R and pandas take as is."""
    return name.replace(" ", "_").replace("-", "_") + "_" + column


def _side_columns() -> list[str]:
    """``thalamus_left_ml``, ``thalamus_right_ml``, ``thalamus_asymmetry_index``, ... for the paired structures."""
    return [structure_column(s.name, column) for s in load_label_table().structures if s.paired
            for column in SIDE_COLUMNS]


def side_cells(side_volumes_ml: dict) -> dict[str, str]:
    """A case's left/right columns (none without left/right), with ``segment --volumes``'s cells."""
    table = load_label_table()
    names = [s.name for s in table.structures if s.paired and s.name in side_volumes_ml]
    cells = [cell for name in names for cell in hemispheres.side_cells(side_volumes_ml, name)]
    columns = [structure_column(name, column) for name in names for column in SIDE_COLUMNS]
    return dict(zip(columns, cells))


def columns(rows: list[dict] = ()) -> list[str]:
    """The table's columns; the left/right ones after the intracranial volume when any row has them."""
    table = load_label_table()
    fixed = _FIXED_COLUMNS + [structure_column(s.name) for s in table.structures if s.index > 0] + [ICV_COLUMN]
    sides = _side_columns()
    return fixed + (sides if any(row.get(sides[0]) for row in rows) else [])


def part_name(index: int, count: int) -> str:
    return TABLE_NAME if count == 1 else f"volumes.part-{index + 1}-of-{count}.csv"


def read_table(path: Path) -> dict[str, dict]:
    """Rows of a table by case id; {} when it does not exist yet."""
    if not path.is_file():
        return {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or "case_id" not in reader.fieldnames:
                raise InputError(f"{path} is not a SegLossBrain volumes table (no case_id column); move it away or "
                                 "choose another --output-dir")
            return {row["case_id"]: row for row in reader}
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{path} cannot be read ({error}); move it away or choose another --output-dir") from None


def write_table(path: Path, rows: list[dict]) -> None:
    """All rows, atomically (``imageio.atomic``: a temporary file beside it, then rename)."""
    with open_atomic(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=columns(rows), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        out.flush()
        os.fsync(out.fileno())  # on disk before the rename: a power cut must not leave an empty table


def all_rows(output_dir: Path) -> dict[str, dict]:
    """Every row in ``volumes.csv`` and the part tables beside it, the newest of each case."""
    rows: dict[str, dict] = {}
    for path in [output_dir / TABLE_NAME] + sorted(output_dir.glob("volumes.part-*-of-*.csv")):
        for case_id, row in read_table(path).items():
            if case_id not in rows or row.get("finished", "") >= rows[case_id].get("finished", ""):
                rows[case_id] = row
    return rows


def ordered(rows: dict[str, dict], order: list[str]) -> list[dict]:
    """The cases of ``order`` first, in that order, then rows of earlier runs' other cases (never dropped)."""
    known = set(order)
    return [rows[c] for c in order if c in rows] + [r for c, r in sorted(rows.items()) if c not in known]


@contextmanager
def _merge_lock(output_dir: Path):
    try:
        import fcntl
    except ImportError:  # Windows: no job arrays to race with
        yield
        return
    with open(output_dir / ".volumes.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def merge_tables(output_dir: Path, order: list[str], remove_parts: bool = False) -> Path:
    """Write ``volumes.csv`` from itself and every part table. ``remove_parts`` once every worker has finished."""
    with _merge_lock(output_dir):
        target = output_dir / TABLE_NAME
        write_table(target, ordered(all_rows(output_dir), order))
        if remove_parts:
            for part in output_dir.glob("volumes.part-*-of-*.csv"):
                part.unlink(missing_ok=True)
    return target
