"""Where the module's resources are, in the source tree and in an installed extension.

The repository keeps ``Resources/`` at its top level, beside ``SegLossBrain/``; an installed extension has it
beside the module script (``qt-scripted-modules/Resources``). Slicer's ``resourcePath`` only knows the second.
"""
from __future__ import annotations

from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parent.parent  # holds SegLossBrain.py, SegLossBrainLib, SegLossBrainSlicer


def resources_dir() -> Path:
    for candidate in (MODULE_DIR / "Resources", MODULE_DIR.parent / "Resources"):
        if (candidate / "SegLossBrainLabels.csv").is_file():
            return candidate
    raise FileNotFoundError(f"SegLossBrain resources not found beside {MODULE_DIR} or in its parent folder")


def resource_path(*parts: str) -> str:
    return str(resources_dir().joinpath(*parts))
