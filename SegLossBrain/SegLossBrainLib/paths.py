"""Every location outside the package that the engine reads or writes, and the data's split constants.

* **The data folder** (``synthseg_label_maps/``: whole-head label maps; ``real_dev/``: real scans with their
  FreeSurfer aseg): ``$SEGLOSSBRAIN_DATA``; otherwise ``../shared/data`` beside a source checkout, when it
  exists. An installed package has no checkout to look beside: without the variable, a command that needs the
  data says so and names the variable and the option that replaces it (``--label-maps``, ``--data``).
* **The split**: the two label maps held out of training (synthetic validation: the best checkpoint is chosen
  on them, and experiments score on them) and the whole-brain grid they are drawn at; the real dev scans.
* **The site's pairs folder** (corrected cases saved by ``seglossbrain review`` as fine-tuning pairs):
  ``$SEGLOSSBRAIN_PAIRS`` or ``~/.seglossbrain/pairs``.
* **The user model store** (fine-tuned versions and the active-model choice):
  ``$SEGLOSSBRAIN_MODEL_STORE`` or ``~/.seglossbrain/models``; ``models/store.py`` alone writes it.

Shipped resources (label table, models, demo volume) are found by ``resources.py``.
"""
from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "SEGLOSSBRAIN_DATA"
MODEL_STORE_ENV = "SEGLOSSBRAIN_MODEL_STORE"
PAIRS_ENV = "SEGLOSSBRAIN_PAIRS"
LABEL_MAPS = "synthseg_label_maps"  # sub-folder of the data folder
REAL_DEV = "real_dev"  # sub-folder of the data folder
BRAIN_LABEL_MAPS = "fs_label_maps"  # sub-folder: brain-only maps drawn FreeSurfer's way
# Held out of training before any result was seen, one of each tool: FreeSurfer 6 and FastSurfer
HELD_OUT_BRAIN_MAPS = ("bcbl_sub-01_fs6_aseg.nii.gz", "oasis_OAS_0004-1_fastsurfer_aseg.nii.gz")
HELD_OUT_MAPS = ("training_seg_19.nii.gz", "training_seg_20.nii.gz")  # never trained on: synthetic validation
VALIDATION_SIZE = (112, 144, 112)  # the whole brain at 1.5 mm: the grid of held-out synthetic images
# (case, image, aseg) in REAL_DEV: reported during training and in the model card, never used to choose
REAL_DEV_SCANS = (("bert", "bert_fs7.2_norm.nii.gz", "bert_fs7.2_aseg.nii.gz"),
                  ("vxm", "vxm_test_T1norm.nii.gz", "vxm_test_aseg.nii.gz"))

_CHECKOUT = Path(__file__).resolve().parents[2]  # the repository, when this is SegLossBrain/SegLossBrainLib/paths.py


class DataNotFoundError(FileNotFoundError):
    """No data folder is known; the message says how to name one."""


def _help(option: str | None) -> str:
    where = f"set {DATA_ENV} to the folder that holds {LABEL_MAPS}/ and {REAL_DEV}/"
    return where + (f", or pass {option}" if option else "")


def find_data_dir() -> Path | None:
    """``$SEGLOSSBRAIN_DATA``, else ``../shared/data`` beside a source checkout if it exists, else None."""
    override = os.environ.get(DATA_ENV)
    if override:
        if not Path(override).is_dir():
            raise DataNotFoundError(f"{DATA_ENV}={override} is not a folder; {_help(None)}")
        return Path(override)
    beside = _CHECKOUT.parent / "shared" / "data"
    if (_CHECKOUT / "pyproject.toml").is_file() and beside.is_dir():
        return beside
    return None


def data_dir(option: str | None = "--data") -> Path:
    """The data folder, or DataNotFoundError naming ``$SEGLOSSBRAIN_DATA`` and the command's ``option``."""
    found = find_data_dir()
    if found is None:
        raise DataNotFoundError(f"no data folder found: {_help(option)}")
    return found


def label_maps_dir(option: str | None = "--label-maps") -> Path:
    return data_dir(option) / LABEL_MAPS


def split_held_out(maps, held_out_names=HELD_OUT_MAPS) -> tuple[list[str], list[str]]:
    """(training maps, held-out maps) of ``maps`` (paths), by file name."""
    held_out = set(held_out_names)
    return [str(m) for m in maps if Path(m).name not in held_out], [str(m) for m in maps if Path(m).name in held_out]


def user_model_store() -> Path:
    return Path(os.environ.get(MODEL_STORE_ENV, Path.home() / ".seglossbrain" / "models"))


def user_pairs_dir() -> Path:
    return Path(os.environ.get(PAIRS_ENV, Path.home() / ".seglossbrain" / "pairs")).expanduser()
