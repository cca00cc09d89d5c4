"""An interrupted fine-tune that can be continued: its working folder in the user store.

A run works in ``<store>/.unfinished/<name>/`` (hidden from the version list, which reads only the store's top
level): the training loop's checkpoint (``last.pt``: weights, optimiser, step, random state), the best
validated weights so far (``validated.pt``) and ``run.json`` (the settings, the planned steps, the cases'
fingerprints). A run that ends — finished, stopped early, diverged — removes the folder once its version is
saved. One that is stopped by the user saves its best validated weights as the version, as before, and keeps
the folder; one killed by a crash or power cut has only the folder. Either can be continued from its last
checkpoint (``finetune(..., continue_from=name)``; the CLI's ``--continue``), with the same settings, cases and
step plan, so the learning-rate schedule goes on where it stopped. Continuing a run whose version exists
already saves the result under a new name (versions never change, ``models/store.py``).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..imageio.atomic import atomic_path, write_text_atomic
from ..models.store import user_model_store

FOLDER = ".unfinished"
RECORD = "run.json"
VALIDATED = "validated.pt"


class UnfinishedError(ValueError):
    """No such unfinished run, or it cannot be continued; the message says what to do."""


@dataclass
class UnfinishedRun:
    name: str
    folder: Path
    record: dict  # run.json

    @property
    def step(self) -> int | None:
        checkpoint = self.folder / "last.pt"
        if not checkpoint.is_file():
            return None
        return int(torch.load(checkpoint, map_location="cpu", weights_only=True)["step"])


def folder_for(name: str) -> Path:
    return user_model_store() / FOLDER / name


def exists(name: str) -> bool:
    return (folder_for(name) / RECORD).is_file()


def write_record(folder: Path, record: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / RECORD, json.dumps(record, indent=1, default=str))


def save_validated(folder: Path, best: dict) -> None:
    """The best validated weights so far ({"step", "state", "result"}), replaced whole."""
    with atomic_path(folder / VALIDATED) as temporary:
        torch.save(best, temporary)


def load_validated(folder: Path) -> dict | None:
    path = folder / VALIDATED
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def find(name: str) -> UnfinishedRun:
    folder = folder_for(name)
    try:
        record = json.loads((folder / RECORD).read_text())
    except FileNotFoundError:
        known = ", ".join(run.name for run in list_runs()) or "none"
        raise UnfinishedError(f"no unfinished fine-tune named {name!r} (unfinished runs: {known})") from None
    except json.JSONDecodeError as error:
        raise UnfinishedError(f"{folder / RECORD} is damaged ({error}); discard the run and start again") from None
    if not (folder / "last.pt").is_file():
        raise UnfinishedError(f"the unfinished fine-tune {name!r} stopped before its first checkpoint: nothing to "
                              "continue from; discard it and start again")
    return UnfinishedRun(name, folder, record)


def list_runs() -> list[UnfinishedRun]:
    root = user_model_store() / FOLDER
    runs = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        try:
            runs.append(UnfinishedRun(folder.name, folder, json.loads((folder / RECORD).read_text())))
        except (OSError, json.JSONDecodeError):
            continue
    return runs


def remove(folder: Path) -> None:
    """Remove a run's working folder, and the store's ``.unfinished`` folder when no other run is left in it."""
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()
    except OSError:  # other unfinished runs, or already gone
        pass


def discard(name: str) -> None:
    folder = folder_for(name)
    if not folder.is_dir():
        raise UnfinishedError(f"no unfinished fine-tune named {name!r}")
    remove(folder)
