"""Fine-tuning: a model version + a site's own (image, labelmap) pairs -> a new version in the user store.

It runs the one training loop (``training.trainer.Trainer``) with real patches (``training.labelled_scans.PairSampler``) in
place of synthetic brains, and adds what few cases need:

* **Validation.** A case the user names; otherwise, with two or more pairs, the last pair is held out
  (one held-out case, not a full leave-one-out rotation, which would train one model per case); with a
  single pair, Dice is measured on that training case itself (said in the log and the metadata: it is
  optimistic, and early stopping is then off). Dice per structure is computed on the 1.5 mm network grid
  before fine-tuning and every ``validate_every`` steps.
* **The weights kept** are the latest validated ones that score within half a point of the best validation
  after step 0 (one case's Dice is that noisy; ``validator.KEEP_MARGIN``). Early stopping ends the run only when
  ``patience`` validations in a row score below the base model, in the second half of the planned steps, so a
  run that only makes things worse stops soon and a single dip never ends one. Metadata records the Dice
  before and after and every validation; a warning says so when fine-tuning lowered it.
* **Stopping.** ``cancel`` (a ``threading.Event``) or SIGTERM/SIGINT ends the run after the current step;
  a NaN/Inf loss ends it too. Either way the weights roll back to the last validated state, which is saved
  if there is one; nothing is saved otherwise. Nothing half-written is ever left: files are renamed into
  place whole, and a failed save removes what it wrote.
* **Continuing.** A run stopped by the user, or killed by a crash, keeps its working folder in the store and
  can be continued from its last checkpoint (``continue_finetune``; ``unfinished.py``).
* **Time budget.** ``max_minutes`` is the time from start to the saved version; the run times its first steps
  and plans how many fit (``budget.py``), with the learning-rate schedule sized to them.
* **One at a time.** A lock in the store refuses a second fine-tune while one runs.

Shipped weights are only read. Defaults (``config.py``; measured in docs/FINETUNING_RESULTS.md) suit
fine-tuning a trained model on a site's cases: Adam warming up to 3e-4 and decaying to 0 over the steps that fit
8 minutes, half of the patches centred where the base model disagrees with the site's labels, ExpLog with the
paper's gamma 0.3, w_dice 0.8, w_cross 0.2 (``gamma`` sets both exponents), BatchNorm statistics kept, and
the network's input noise off: the paper's regulariser (Gaussian noise as strong as the image itself) suits
training from scratch on thousands of images; on one real case it made even that case's Dice fall while
training, and the held-out case lost 1-3.5 points (docs/FINETUNING_RESULTS.md). ``input_noise=True`` keeps it.
"""
from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from ..device import select_device
from ..models import lock as store_lock
from ..models import store as model_store
from ..models.files import is_within, read_metadata, sha256_of
from ..models.store import NoModelError, resolve_model
from ..resources import shipped_models_dir
from ..training.labelled_scans import load_pair
from . import unfinished
from .config import EventCallback, FinetuneConfig, FinetuneError, FinetuneResult, resolve_loss_params
from .run import Run, execute
from .validator import ValidationMode, split_cases

__all__ = ["FinetuneConfig", "FinetuneError", "FinetuneResult", "continue_finetune", "finetune",
           "resolve_loss_params"]


def _base(base_path: Path) -> tuple[dict, dict]:
    """(the base model's metadata, what the new version records of it)."""
    return read_metadata(base_path), {"name": base_path.stem, "sha256": sha256_of(base_path),
                                      "source": "shipped" if is_within(base_path, shipped_models_dir()) else "user"}


def _load_cases(config: FinetuneConfig, log) -> tuple[list, list, ValidationMode]:
    training_files, validation_files, mode, split_message = split_cases(config)
    training = [load_pair(i, l, config.resample_labels, log) for i, l in training_files]
    validation = training if mode is ValidationMode.TRAINING_CASE else \
        [load_pair(i, l, config.resample_labels, log) for i, l in validation_files]
    overlap = {p.image_sha256 for p in training} & {p.image_sha256 for p in validation}
    if overlap and mode is not ValidationMode.TRAINING_CASE:
        raise FinetuneError("the validation case is also a training case; choose a different validation case")
    log(split_message)
    return training, validation, mode


def _execute(run: Run) -> FinetuneResult:
    """``run.execute``; a run that fails before it can be continued leaves no working folder behind."""
    try:
        return execute(run)
    except BaseException:
        if not unfinished.exists(run.config.name):
            unfinished.remove(run.folder)
        raise


def finetune(config: FinetuneConfig, on_event: EventCallback | None = None,
             cancel: threading.Event | None = None) -> FinetuneResult:
    """Fine-tune ``config.base`` on ``config.pairs`` and save the result as user version ``config.name``."""
    started = time.perf_counter()
    emit = on_event or (lambda event: None)

    def log(message: str, **fields) -> None:
        emit({"event": "log", "message": message, **fields})

    config.check()
    params = resolve_loss_params(config.loss, config.loss_params)
    try:
        base_path = resolve_model(config.base)
    except NoModelError:
        raise FinetuneError("no model to start from: none is installed or active; pass a model file as the base "
                            "(--base PATH)") from None
    base_meta, base = _base(base_path)
    model_store.check_new_name(config.name)
    device = select_device(config.device)
    with store_lock.finetune_lock(config.name):
        if unfinished.exists(config.name):
            raise FinetuneError(f"an unfinished fine-tune named {config.name!r} exists: continue it (seglossbrain "
                                f"finetune --continue {config.name}), discard it (--discard {config.name}), or "
                                "choose another name")
        training, validation, mode = _load_cases(config, log)
        folder = unfinished.folder_for(config.name)
        shutil.rmtree(folder, ignore_errors=True)  # leftovers of a run that never became continuable
        model_store.ensure_writable(folder)
        return _execute(Run(config, params, base_path, base_meta, base, training, validation, mode, device, folder,
                            config.name, emit, cancel, started))


def continue_finetune(name: str, new_name: str | None = None, on_event: EventCallback | None = None,
                      cancel: threading.Event | None = None, device: str | None = None) -> FinetuneResult:
    """Continue the unfinished fine-tune ``name`` from its last checkpoint, with its own settings and cases.

    The result is saved as ``name`` when the run never saved a version (a crash), otherwise as ``new_name``
    (default ``<name>-continued``): versions never change once written.
    """
    started = time.perf_counter()
    emit = on_event or (lambda event: None)

    def log(message: str, **fields) -> None:
        emit({"event": "log", "message": message, **fields})

    try:
        record = unfinished.find(name).record
    except unfinished.UnfinishedError as error:
        raise FinetuneError(str(error)) from None
    config = FinetuneConfig.from_json(record["config"])
    if device:
        config.device = device
    save_name = new_name or (f"{name}-continued" if record.get("version_saved") else name)
    model_store.check_new_name(save_name)
    base_path = Path(record["base_path"])
    if not base_path.is_file() or sha256_of(base_path) != record["base"]["sha256"]:
        raise FinetuneError(f"the base model of this run ({base_path}) is missing or has changed since it started; "
                            f"it cannot be continued: discard it (--discard {name}) and start again")
    base_meta, base = _base(base_path)
    with store_lock.finetune_lock(name):
        training, validation, mode = _load_cases(config, log)
        found = [p.fingerprint() for p in training], [p.fingerprint() for p in validation]
        if found != (record["training_cases"], record["validation_cases"]):
            raise FinetuneError("the case files of this run changed since it started; it cannot be continued: "
                                f"discard it (--discard {name}) and start again")
        run = Run(config, resolve_loss_params(config.loss, config.loss_params), base_path, base_meta, base, training,
                  validation, mode, select_device(config.device), unfinished.folder_for(name), save_name, emit,
                  cancel, started, record)
        return execute(run)
