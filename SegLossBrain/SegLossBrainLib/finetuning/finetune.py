"""Fine-tuning: a model version + a site's own (image, labelmap) pairs -> a new version in the user store.

It runs the one training loop (``training.trainer.Trainer``) with real patches (``pairs.PairSampler``) in
place of synthetic brains, and adds what few cases need:

* **Validation.** A case the user names; otherwise, with two or more pairs, the last pair is held out
  (one held-out case, not a full leave-one-out rotation, which would train one model per case); with a
  single pair, Dice is measured on that training case itself (said in the log and the metadata: it is
  optimistic, and early stopping is then off). Dice per structure is computed on the 1.5 mm network grid
  before fine-tuning and every ``validate_every`` steps.
* **The weights kept** are those of the best validation after step 0; early stopping ends the run after
  ``patience`` validations that did not beat the best score so far (the base model's score included), so a
  run that only makes things worse stops soon. Metadata records the Dice before and after; a warning says
  so when fine-tuning lowered it.
* **Stopping.** ``cancel`` (a ``threading.Event``) or SIGTERM/SIGINT ends the run after the current step;
  a NaN/Inf loss ends it too. Either way the weights roll back to the last validated state, which is saved
  if there is one; nothing is saved otherwise. Nothing half-written is ever left: files are renamed into
  place whole, a failed save removes what it wrote, and the working folder is temporary.
* **One at a time.** A lock in the store refuses a second fine-tune while one runs.

Shipped weights are only read. Defaults suit fine-tuning a trained model: Adam at 3e-5, ExpLog with the
paper's gamma 0.3, w_dice 0.8, w_cross 0.2 (``gamma`` sets both exponents), BatchNorm statistics kept, and
the network's input noise off: the paper's regulariser (Gaussian noise as strong as the image itself) suits
training from scratch on thousands of images; on one real case it made even that case's Dice fall while
training, and the held-out case lost 1-3.5 points (docs/FINETUNING_RESULTS.md). ``input_noise=True`` keeps it.
"""
from __future__ import annotations

import math
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..device import select_device
from ..evaluation.metrics import dice_per_label
from ..inference.segment import predict_probabilities
from ..labels import load_label_table
from ..losses import get_loss, label_weights_from_frequencies
from ..models import lock as store_lock
from ..models import store as model_store
from ..models.files import is_within, read_metadata, sha256_of
from ..models.store import NoModelError, resolve_model
from ..resources import shipped_models_dir
from ..training.trainer import WEIGHTED_LOSSES, Trainer, TrainingConfig
from ..training.labelled_scans import PairSampler, TrainingPair, load_pair

EventCallback = Callable[[dict], None]


class FinetuneError(ValueError):
    """Fine-tuning cannot start or finish; the message says why and what to do."""


@dataclass
class FinetuneConfig:
    pairs: list  # [(image path, labels path)]
    name: str  # the new version's name in the user store
    base: str | None = None  # model name or path; None: the active model
    validation: tuple | None = None  # (image path, labels path); None: see the module docstring
    loss: str = "explog"
    loss_params: dict = field(default_factory=dict)
    steps: int = 200
    learning_rate: float = 3e-5  # 1e-4 cost the other dev scan up to 4.7 points with the GPU-trained base
    batch_size: int = 1
    patch_size: tuple = (64, 64, 64)
    validate_every: int = 20
    patience: int = 5  # validations without improvement before stopping (0: never stop early)
    freeze_encoder: bool = False
    freeze_batchnorm: bool = True  # keep the base model's BatchNorm statistics (see BENCHMARKS / model card)
    input_noise: bool = False  # the network's training-time input noise (module docstring: off for fine-tuning)
    augment: bool = True
    resample_labels: bool = False  # labels on another grid than their image: nearest neighbour onto it
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"

    def check(self) -> None:
        if not self.pairs:
            raise FinetuneError("no training pairs: give at least one (image, labelmap) pair")
        for pair in self.pairs + ([self.validation] if self.validation else []):
            if len(pair) != 2:
                raise FinetuneError(f"{pair!r}: a pair is (image, labelmap)")
            for path in pair:  # fail in a second, not after the lock and the first reads
                if not Path(path).exists():
                    raise FinetuneError(f"{path}: no such file or folder")
        if self.steps < 1 or self.validate_every < 1 or self.batch_size < 1 or self.patience < 0:
            raise FinetuneError("steps, validate_every and batch_size must be >= 1 and patience >= 0")
        if not (0 < self.learning_rate < 1):
            raise FinetuneError(f"learning rate {self.learning_rate} is outside (0, 1); 3e-5 suits fine-tuning")
        if len(self.patch_size) != 3 or any(int(s) < 16 or int(s) % 16 for s in self.patch_size):
            raise FinetuneError(f"patch size {tuple(self.patch_size)}: each side must be a multiple of 16 (e.g. 64)")


@dataclass
class FinetuneResult:
    status: str  # finished, early_stopped, cancelled, diverged
    path: Path | None  # the new version's .safetensors, None when nothing was saved
    name: str
    steps_run: int
    best_step: int | None
    before: dict  # {"mean": float, "dice": {structure: float|None}}
    after: dict | None
    metadata: dict | None


def resolve_loss_params(loss: str, params: dict | None) -> dict:
    """Loss parameters with ``gamma`` expanded to ExpLog's two exponents; checked by building the loss."""
    params = dict(params or {})
    if loss.strip().lower() == "explog" and "gamma" in params:
        gamma = params.pop("gamma")
        params.setdefault("gamma_dice", gamma)
        params.setdefault("gamma_cross", gamma)
    get_loss(loss, **params)  # unknown names or parameters fail here, before any work
    return params


def _clean(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 4)


class _Validator:
    """Dice per structure on the validation pairs; remembers the best fine-tuned weights (in memory)."""

    def __init__(self, pairs: list[TrainingPair], device: torch.device):
        self.pairs, self.device, self.table = pairs, device, load_label_table()
        self.trainer: Trainer | None = None
        self.best: dict | None = None  # {"step", "state", "result"}

    def _indices(self, pair: TrainingPair) -> list[int]:
        # Scores against aseg leave out CSF and optic chiasm (aseg's CSF is not the structure the model calls CSF).
        wanted = self.table.scored_indices if pair.convention == "freesurfer" else range(1, self.table.num_classes)
        chosen = [i for i in wanted if i in pair.structures]
        return chosen or list(pair.structures)

    def evaluate(self, network) -> dict:
        was_training = network.training
        network.eval()
        per_case, means = [], []
        try:
            for pair in self.pairs:
                probabilities = predict_probabilities(network, pair.image[None], self.device)
                dice = dice_per_label(probabilities.argmax(0).numpy(), pair.labels.numpy(), self.table.num_classes)
                per_case.append(dice)
                means.append(float(np.nanmean([dice[i] for i in self._indices(pair)])))
        finally:
            network.train(was_training)
        with np.errstate(all="ignore"):
            dice = np.nanmean(np.stack(per_case), axis=0) if len(per_case) > 1 else per_case[0]
        mean = float(np.mean(means))
        return {"score": mean, "mean": _clean(mean),
                "dice": {self.table.names[i]: _clean(dice[i]) for i in range(1, self.table.num_classes)}}

    def __call__(self, network) -> dict:
        result = self.evaluate(network)
        step = self.trainer.step if self.trainer else 0
        if step > 0 and (self.best is None or result["score"] > self.best["result"]["score"]):
            self.best = {"step": step, "result": result,
                         "state": {k: v.detach().to("cpu", copy=True) for k, v in network.state_dict().items()}}
        return {**result, "best_step": self.best["step"] if self.best else None,
                "best_mean": self.best["result"]["mean"] if self.best else None}


class ValidationMode(str, Enum):
    """Which case fine-tuning validates on; the value is what a new version's metadata records."""

    CHOSEN = "chosen case"
    LAST_PAIR = "last pair held out"
    TRAINING_CASE = "training case (no held-out case)"  # a single pair: optimistic, and no early stopping


@dataclass
class _Run:
    """One fine-tuning run, its inputs checked and its pairs loaded."""

    config: FinetuneConfig
    loss_params: dict  # gamma expanded (``resolve_loss_params``); label weights are added by ``_run``
    base_path: Path
    base_meta: dict
    base: dict  # name, sha256 and source of the base model, as the new version records them
    training: list  # [TrainingPair]
    validation: list  # [TrainingPair]; the training pairs themselves with ValidationMode.TRAINING_CASE
    mode: ValidationMode
    device: torch.device
    run_dir: str  # the training loop's working folder (temporary)
    emit: EventCallback
    cancel: threading.Event | None

    def log(self, message: str, **fields) -> None:
        self.emit({"event": "log", "message": message, **fields})


def _split(config: FinetuneConfig) -> tuple[list, list, ValidationMode, str]:
    """(training pairs, validation pairs, validation mode, what to tell the user) as file pairs."""
    pairs = [tuple(p) for p in config.pairs]
    if config.validation:
        return pairs, [tuple(config.validation)], ValidationMode.CHOSEN, \
            f"validation: {Path(config.validation[0]).name} (chosen)"
    if len(pairs) >= 2:
        return pairs[:-1], pairs[-1:], ValidationMode.LAST_PAIR, \
            f"validation: {Path(pairs[-1][0]).name} held out (the last pair); training on the other {len(pairs) - 1}"
    return pairs, pairs, ValidationMode.TRAINING_CASE, (
        "validation: a single pair and no validation case, so Dice is measured on the training case itself "
        "(optimistic) and early stopping is off; give a validation case for an honest score")


def _label_weights(config: FinetuneConfig, params: dict, base_meta: dict, sampler: PairSampler, table) -> tuple:
    if config.loss.strip().lower() not in WEIGHTED_LOSSES or "label_weights" in params:
        return params.get("label_weights"), "given" if "label_weights" in params else None
    recorded = (base_meta.get("loss") or {}).get("label_weights")
    if isinstance(recorded, list) and len(recorded) == table.num_classes:
        return recorded, "base model"  # the weights the base was trained with: a consistent objective
    return label_weights_from_frequencies(sampler.label_frequencies(table.num_classes)).tolist(), "training labels"


def finetune(config: FinetuneConfig, on_event: EventCallback | None = None,
             cancel: threading.Event | None = None) -> FinetuneResult:
    """Fine-tune ``config.base`` on ``config.pairs`` and save the result as user version ``config.name``."""
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
    base_meta = read_metadata(base_path)
    base = {"name": base_path.stem, "sha256": sha256_of(base_path),
            "source": "shipped" if is_within(base_path, shipped_models_dir()) else "user"}
    model_store.check_new_name(config.name)
    device = select_device(config.device)
    with store_lock.finetune_lock(config.name):
        training_files, validation_files, mode, split_message = _split(config)
        training = [load_pair(i, l, config.resample_labels, log) for i, l in training_files]
        validation = training if mode is ValidationMode.TRAINING_CASE else \
            [load_pair(i, l, config.resample_labels, log) for i, l in validation_files]
        overlap = {p.image_sha256 for p in training} & {p.image_sha256 for p in validation}
        if overlap and mode is not ValidationMode.TRAINING_CASE:
            raise FinetuneError("the validation case is also a training case; choose a different validation case")
        log(split_message)
        run_dir = tempfile.mkdtemp(prefix="seglossbrain-finetune-")
        try:
            return _run(_Run(config, params, base_path, base_meta, base, training, validation, mode, device, run_dir,
                             emit, cancel))
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)


def _run(run: _Run) -> FinetuneResult:
    config, params, training, validation, device = run.config, run.loss_params, run.training, run.validation, run.device
    table = load_label_table()
    sampler = PairSampler(training, config.patch_size, augment=config.augment)
    weights, weights_source = _label_weights(config, params, run.base_meta, sampler, table)
    if weights is not None:
        params = {**params, "label_weights": weights}
    validator = _Validator(validation, device)
    training_config = TrainingConfig(
        label_maps=[p.labels_path for p in training], run_dir=run.run_dir,
        architecture=run.base_meta.get("architecture", ""),
        loss=config.loss, loss_params=params, learning_rate=config.learning_rate, batch_size=config.batch_size,
        patch_size=tuple(int(s) for s in config.patch_size), steps=config.steps, checkpoint_every=config.steps,
        validate_every=config.validate_every, seed=config.seed, device=str(device), precision=config.precision,
        patience=0 if run.mode is ValidationMode.TRAINING_CASE else config.patience,
        freeze_encoder=config.freeze_encoder,
        freeze_batchnorm=config.freeze_batchnorm)
    started = time.perf_counter()
    clock = {"loop": started}  # reset when the loop starts: the ETA covers steps and validations only

    def relay(event: dict) -> None:
        kind = event.get("kind")
        if event.get("event") == "step":
            done = event["step"]
            spent = time.perf_counter() - clock["loop"]
            event = {**event, "eta_s": round(spent / max(done, 1) * (event["total"] - done), 1)}
        elif kind == "diverged":
            event = {**event, "message": f"loss became non-finite at step {event['step']}; stopped and rolled back "
                                         "to the last validated weights. Lower the learning rate or check the pairs."}
        elif kind == "stopped":
            event = {**event, "message": f"cancelled at step {trainer.step}; keeping the last validated weights"}
        run.emit(event)

    trainer = Trainer(training_config, relay, generator=sampler, validator=validator, stop_event=run.cancel)
    validator.trainer = trainer
    trainer.load_initial_weights(str(run.base_path))  # checks the file's sha256; the base file is only read
    if not config.input_noise and hasattr(trainer.network, "noise_std"):
        trainer.network.noise_std = 0.0  # train-mode input noise off (module docstring); eval never adds it
    run.log(f"fine-tuning {run.base['name']} ({run.base['source']}) on {len(training)} case(s) with {config.loss}, "
            f"{config.steps} steps at lr {config.learning_rate:g} on {device.type}"
            + (" (encoder frozen)" if config.freeze_encoder else ""))
    before = validator.evaluate(trainer.network)
    trainer.best_score = before["score"]  # early stopping counts from the base model's score
    run.emit({"event": "validation", "step": 0, "before": True, **before})
    clock["loop"] = time.perf_counter()
    try:
        outcome = {"status": "stopped"} if run.cancel is not None and run.cancel.is_set() else trainer.run()
    except OSError as error:  # the loop's working files (temporary folder): say where, not a traceback
        reason = error.strerror or str(error)
        raise FinetuneError(f"fine-tuning stopped: cannot write its working files in {run.run_dir} ({reason}); free "
                            "space there or point TMPDIR elsewhere. No new version was written.") from None
    status = {"stopped": "cancelled"}.get(outcome["status"], outcome["status"])
    best = validator.best
    if best is None:
        run.log(f"{status} before any validation after step 0: no new version written; the base model is unchanged")
        result = FinetuneResult(status, None, config.name, trainer.step, None, _public(before), None, None)
        run.emit({"event": "result", **_result_event(result)})
        return result
    trainer.network.load_state_dict(best["state"])  # the last good (best validated) weights
    after = best["result"]
    if after["score"] < before["score"]:
        run.log(f"validation Dice fell from {before['mean']} to {after['mean']} with fine-tuning; keep using the "
                "current model unless the validation case is unrepresentative", level="warning")
    metadata = {
        "base": run.base,
        "loss": {"name": config.loss, "params": {k: v for k, v in params.items() if k != "label_weights"},
                 "label_weights": weights, "label_weights_from": weights_source},
        "steps": best["step"],
        "optimizer": "adam", "learning_rate": config.learning_rate, "patch_size": list(training_config.patch_size),
        "training_cases": [p.fingerprint() for p in training],
        "validation": {"mode": run.mode.value, "grid": "1.5 mm network grid",
                       "cases": [p.fingerprint() for p in validation], "before": _public(before),
                       "after": _public(after)},
        "finetune": {"status": status, "steps_run": trainer.step, "steps_requested": config.steps,
                     "best_step": best["step"], "validate_every": config.validate_every,
                     "patience": training_config.patience, "freeze_encoder": config.freeze_encoder,
                     "freeze_batchnorm": config.freeze_batchnorm, "input_noise": config.input_noise,
                     "augment": config.augment, "resample_labels": config.resample_labels, "seed": config.seed,
                     "batch_size": config.batch_size, "device": str(device),
                     "wall_time_s": round(time.perf_counter() - started, 1)},
    }
    path = model_store.save_version(trainer.network, config.name, metadata)
    run.log(f"saved {config.name} (weights of step {best['step']}) to {path}")
    result = FinetuneResult(status, path, config.name, trainer.step, best["step"], _public(before), _public(after),
                            read_metadata(path))
    run.emit({"event": "result", **_result_event(result)})
    return result


def _public(validation: dict) -> dict:
    return {"mean": validation["mean"], "dice": validation["dice"]}


def _result_event(result: FinetuneResult) -> dict:
    return {"status": result.status, "name": result.name, "path": str(result.path) if result.path else None,
            "steps_run": result.steps_run, "best_step": result.best_step, "before": result.before,
            "after": result.after}
