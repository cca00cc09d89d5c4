"""Where the shipped resources (label table, models) live.

The repository keeps `Resources/` at its top level (beside `SegLossBrain/`); a wheel carries a copy inside
the package (`SegLossBrainLib/Resources`); a Slicer extension installs it beside the module scripts. The
environment variable ``SEGLOSSBRAIN_RESOURCES`` overrides all three.
"""
from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resources_dir() -> Path:
    override = os.environ.get("SEGLOSSBRAIN_RESOURCES")
    candidates = [Path(override)] if override else []
    candidates += [_PACKAGE / "Resources", _PACKAGE.parent / "Resources", _PACKAGE.parent.parent / "Resources"]
    for candidate in candidates:
        if (candidate / "SegLossBrainLabels.csv").is_file():
            return candidate
    raise FileNotFoundError(
        "SegLossBrain resources (SegLossBrainLabels.csv) not found; looked in "
        + ", ".join(str(c) for c in candidates)
        + ". Reinstall the package or set SEGLOSSBRAIN_RESOURCES to the Resources folder."
    )


def label_table_path() -> Path:
    return resources_dir() / "SegLossBrainLabels.csv"


def shipped_models_dir() -> Path:
    return resources_dir() / "Models"
