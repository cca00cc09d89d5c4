"""One fine-tuning run, its inputs loaded and checked (``finetune.py``): the training loop to a time budget,
validation, the working folder that lets a stopped or crashed run continue, and the new version saved."""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..device import fast_precision
from ..labels import load_label_table
from ..losses import get_loss, label_weights_from_frequencies
from ..models import store as model_store
from ..models.files import load_model, read_metadata
from ..training.labelled_scans import PairSampler
from ..training.trainer import WEIGHTED_LOSSES, Trainer, TrainingConfig
from . import unfinished
from .aseg_loss import CsfAsBackgroundLoss, without_csf
from .budget import PROBE_STEPS, StepPlan, plan_steps
from .config import (SINGLE_CASE_BLEND, SINGLE_CASE_LR, SINGLE_CASE_STEPS, WCE_WEIGHT_EXPONENT, EventCallback,
                     FinetuneConfig, FinetuneError, FinetuneResult)
from .validator import KEEP_MARGIN, STOP_MARGIN, Validator, ValidationMode, focus_masks

CHECKPOINT_EVERY = 50  # steps between checkpoints of the working folder, at most (and at every validation)
FOCUS_FILE = "focus.pt"


@dataclass
class Run:
    """One fine-tuning run, its inputs checked and its pairs loaded."""

    config: FinetuneConfig
    loss_params: dict  # gamma expanded (``resolve_loss_params``); label weights are added by ``execute``
    base_path: Path
    base_meta: dict
    base: dict  # name, sha256 and source of the base model, as the new version records them
    training: list  # [TrainingPair]
    validation: list  # [TrainingPair]; the training pairs themselves with ValidationMode.TRAINING_CASE
    mode: ValidationMode
    device: torch.device
    folder: Path  # the working folder in the store (unfinished.py)
    save_name: str  # the new version's name (``config.name`` unless a continued run's version exists)
    emit: EventCallback
    cancel: threading.Event | None
    started: float  # time.perf_counter() when fine-tuning was asked for: the time budget counts from there
    record: dict | None = None  # run.json of the run being continued; None: a new run

    def log(self, message: str, **fields) -> None:
        self.emit({"event": "log", "message": message, **fields})


def _label_weights(config: FinetuneConfig, params: dict, base_meta: dict, sampler: PairSampler, table) -> tuple:
    """(label weights, where they came from): given ones; else the base model's (a consistent objective); else
    Wong et al.'s from the training labels. WCE alone takes them to the power WCE_WEIGHT_EXPONENT (config.py)."""
    loss = config.loss.strip().lower()
    if loss not in WEIGHTED_LOSSES or "label_weights" in params:
        return params.get("label_weights"), "given" if "label_weights" in params else None
    recorded = (base_meta.get("loss") or {}).get("label_weights")
    if isinstance(recorded, list) and len(recorded) == table.num_classes:
        weights, source = recorded, "base model"
    else:
        weights = label_weights_from_frequencies(sampler.label_frequencies(table.num_classes)).tolist()
        source = "training labels"
    if loss == "wce":
        weights = [float(w) ** WCE_WEIGHT_EXPONENT for w in weights]
        source += f", to the power {WCE_WEIGHT_EXPONENT:g}"
    return weights, source


def _new_record(run: Run, before: dict, validation_s: float) -> dict:
    return {"config": run.config.to_json(), "base": run.base, "base_path": str(run.base_path),
            "training_cases": [p.fingerprint() for p in run.training],
            "validation_cases": [p.fingerprint() for p in run.validation], "mode": run.mode.value,
            "before": before, "validation_s": validation_s, "plan": None, "version_saved": None}


def execute(run: Run) -> FinetuneResult:
    config, params, training, device = run.config, run.loss_params, run.training, run.device
    table = load_label_table()
    precision = fast_precision(device) if config.precision == "auto" else config.precision
    sampler = PairSampler(training, config.patch_size, augment=config.augment)
    weights, weights_source = _label_weights(config, params, run.base_meta, sampler, table)
    if weights is not None:
        params = {**params, "label_weights": weights}
    validator = Validator(run.validation, device)
    max_steps, rate = config.steps, config.learning_rate
    if run.mode is ValidationMode.TRAINING_CASE and config.single_case_limit:
        max_steps, rate = min(max_steps, SINGLE_CASE_STEPS), min(rate, SINGLE_CASE_LR)
        run.log(f"no held-out case: nothing can tell learning this case from over-fitting it, so the run stays "
                f"small (at most {max_steps} steps at learning rate {rate:g}); give 3-5 cases and a validation case "
                "for the full run", kind="single_case", level="warning")
    recorded_plan = StepPlan(**run.record["plan"]) if run.record and run.record.get("plan") else None
    steps = recorded_plan.steps if recorded_plan else max_steps
    every = recorded_plan.validate_every if recorded_plan else (config.validate_every or max_steps)
    training_config = TrainingConfig(
        label_maps=[p.labels_path for p in training], run_dir=str(run.folder),
        architecture=run.base_meta.get("architecture", ""),
        loss=config.loss, loss_params=params, learning_rate=rate, lr_schedule=config.lr_schedule,
        warmup_steps=config.warmup_steps, batch_size=config.batch_size,
        patch_size=tuple(int(s) for s in config.patch_size), steps=steps, checkpoint_every=min(every, CHECKPOINT_EVERY),
        validate_every=every, seed=config.seed, device=str(device), precision=precision,
        patience=0,  # the validator's rule instead (``Validator.early_stop``), set below
        freeze_encoder=config.freeze_encoder, freeze_batchnorm=config.freeze_batchnorm)
    state = {"plan": recorded_plan, "probe": [], "record": run.record}

    def replan(event: dict) -> None:
        """After PROBE_STEPS steps of a new run: fit it to the time budget (budget.py) and say so."""
        step, probe = event["step"], state["probe"]
        probe.append(event["elapsed_s"])  # this session's steps: a continued run may have no plan yet
        if state["plan"] is not None or len(probe) != PROBE_STEPS or step >= training_config.steps:
            return
        step_s = max((probe[-1] - probe[0]) / (PROBE_STEPS - 1), 1e-3)  # the first step is slower: left out
        chosen = plan_steps(max_steps, config.max_minutes * 60, time.perf_counter() - run.started, step_s,
                            validator.seconds[0], config.validations, config.validate_every)
        trainer.replan(chosen.steps, chosen.validate_every, checkpoint_every=min(chosen.validate_every, CHECKPOINT_EVERY))
        state["plan"] = chosen
        state["record"]["plan"] = asdict(chosen)
        unfinished.write_record(run.folder, state["record"])
        run.log(f"{chosen.steps} steps ({chosen.limit_text(config.max_minutes)}): {step_s:.2f} s a step, {chosen.validation_s:.0f} s a validation; "
                f"about {_minutes(time.perf_counter() - run.started + chosen.seconds_left(step, 0))} from start to "
                "the new version", kind="plan", planned_steps=chosen.steps, validate_every=chosen.validate_every)

    def relay(event: dict) -> None:
        kind = event.get("kind")
        if event.get("event") == "step":
            replan(event)
            done, chosen = event["step"], state["plan"]
            per_step = event["elapsed_s"] / max(done, 1)
            if chosen is None:  # not planned yet (the first PROBE_STEPS steps): the budget bounds the run
                eta = per_step * (training_config.steps - done) + validator.seconds[0] * config.validations
                if config.max_minutes:
                    eta = min(eta, max(0.0, config.max_minutes * 60 - (time.perf_counter() - run.started)))
            else:  # the plan's arithmetic with the costs measured so far
                measured = StepPlan(chosen.steps, chosen.validate_every, per_step, float(np.mean(validator.seconds)),
                                    chosen.limited_by_time)
                eta = measured.seconds_left(done, done // chosen.validate_every)
            event = {**event, "total": training_config.steps, "eta_s": round(eta, 1)}
        elif kind == "diverged":
            event = {**event, "message": f"loss became non-finite at step {event['step']}; stopped and rolled back "
                                         "to the last validated weights. Lower the learning rate or check the pairs."}
        elif kind == "stopped":
            event = {**event, "message": f"stopped at step {trainer.step}; keeping the last validated weights"}
        run.emit(event)

    trainer = Trainer(training_config, relay, generator=sampler, validator=validator, stop_event=run.cancel)
    csf_merged = config.csf_as_background and all(pair.convention == "freesurfer" for pair in training)
    if csf_merged:  # aseg_loss.py: aseg does not tell CSF from background, so neither does the loss
        trainer.loss = CsfAsBackgroundLoss(get_loss(config.loss, **{**params, "label_weights": without_csf(
            params.get("label_weights"))})).to(device)
    validator.trainer = trainer
    patience = 0 if run.mode is ValidationMode.TRAINING_CASE else config.patience
    trainer.early_stop = lambda step, planned: validator.early_stop(step, planned, patience)
    trainer.load_initial_weights(str(run.base_path))  # checks the file's sha256; the base file is only read
    if not config.input_noise and hasattr(trainer.network, "noise_std"):
        trainer.network.noise_std = 0.0  # train-mode input noise off (module docstring); eval never adds it
    run.log(f"fine-tuning {run.base['name']} ({run.base['source']}) on {len(training)} case(s) with {config.loss}, "
            f"lr {rate:g} ({config.lr_schedule}), {precision} on {device.type}, at most "
            f"{max_steps} steps" + (f" or {config.max_minutes:g} minutes" if config.max_minutes else "")
            + (" (encoder frozen)" if config.freeze_encoder else ""))
    if run.record is None:
        before = validator.evaluate(trainer.network)
        trainer.best_score = before["score"]  # the working folder's best.safetensors counts from the base model's score
        state["record"] = _new_record(run, before, validator.seconds[0])
        masks = focus_masks(trainer.network, training, device) if config.focus_errors else None
        if masks is not None:
            torch.save([m.to(torch.bool) for m in masks], run.folder / FOCUS_FILE)
        unfinished.write_record(run.folder, state["record"])  # from here on the run can be continued
    else:
        before = run.record["before"]
        validator.seconds.append(float(run.record["validation_s"]))
        trainer.resume()  # weights, optimiser, step, random state of the last checkpoint
        validator.best = unfinished.load_validated(run.folder)
        path = run.folder / FOCUS_FILE
        masks = torch.load(path, weights_only=True) if config.focus_errors and path.is_file() else None
        run.log(f"continuing from step {trainer.step} of {training_config.steps}")
    validator.base_score = before["score"]
    validator.on_best = lambda best: unfinished.save_validated(run.folder, best)
    run.emit({"event": "validation", "step": 0, "before": True, **before})
    if masks is not None:
        sampler.set_focus(masks)
        share = sum(int(m.sum()) for m in masks) / max(1, sum(int((p.labels > 0).sum()) for p in training))
        run.log(f"the base model disagrees with your labels on {int(sum(m.sum() for m in masks))} voxels of the "
                f"network grid ({100 * share:.1f}% of the labelled volume); half of the training patches are centred "
                "there")
    try:
        outcome = {"status": "stopped"} if run.cancel is not None and run.cancel.is_set() else trainer.run()
    except OSError as error:  # the working folder: say where, not a traceback
        reason = error.strerror or str(error)
        raise FinetuneError(f"fine-tuning stopped: cannot write its working files in {run.folder} ({reason}); free "
                            "space there. No new version was written.") from None
    status = {"stopped": "cancelled"}.get(outcome["status"], outcome["status"])
    result = _conclude(run, trainer, validator, before, status, params, weights, weights_source, precision)
    if status == "cancelled" and (run.folder / "last.pt").is_file():
        state["record"]["version_saved"] = result.name if result.path else None
        unfinished.write_record(run.folder, state["record"])
        run.log(f"the run can be continued from step {trainer.step}: seglossbrain finetune --continue "
                f"{config.name}", kind="resumable")
    else:
        unfinished.remove(run.folder)
    run.emit({"event": "result", **_result_event(result)})
    return result


def _conclude(run: Run, trainer: Trainer, validator: Validator, before: dict, status: str, params: dict, weights,
              weights_source, precision: str) -> FinetuneResult:
    """Save the best validated weights as the new version (when there are any) and say how it went."""
    config, best = run.config, validator.best
    if best is None:
        run.log(f"{status} before any validation after step 0: no new version written; the base model is unchanged")
        return FinetuneResult(status, None, run.save_name, trainer.step, None, _public(before), None, None)
    trainer.network.load_state_dict(best["state"])  # the last good (best validated) weights
    after, blend = best["result"], None
    if run.mode is ValidationMode.TRAINING_CASE and config.single_case_limit:
        blend = SINGLE_CASE_BLEND
        blend_toward_base(trainer.network, run.base_path, blend)
        after = validator.evaluate(trainer.network)
        run.log(f"one case and no held-out case: the new version is {blend:g} of the way from the base model to the "
                f"fine-tuned weights (Dice on the training case {best['result']['mean']} fine-tuned, "
                f"{after['mean']} saved), which keeps most of what the case teaches and limits what other scans "
                "lose", kind="single_case_blend")
    if after["score"] < before["score"]:
        run.log(f"validation Dice fell from {before['mean']} to {after['mean']} with fine-tuning; keep using the "
                "current model unless the validation case is unrepresentative", level="warning")
    metadata = {
        "base": run.base,
        "loss": {"name": config.loss, "params": {k: v for k, v in params.items() if k != "label_weights"},
                 "label_weights": weights, "label_weights_from": weights_source},
        "steps": best["step"],
        "optimizer": "adam", "learning_rate": trainer.config.learning_rate, "lr_schedule": config.lr_schedule,
        "warmup_steps": config.warmup_steps, "patch_size": list(config.patch_size),
        "training_cases": [p.fingerprint() for p in run.training],
        "validation": {"mode": run.mode.value, "grid": "1.5 mm network grid",
                       "cases": [p.fingerprint() for p in run.validation], "before": _public(before),
                       "after": _public(after)},
        "finetune": {"status": status, "steps_run": trainer.step, "steps_requested": config.steps,
                     "best_step": best["step"], "planned_steps": trainer.config.steps,
                     "max_minutes": config.max_minutes, "validate_every": trainer.config.validate_every,
                     "focus_errors": config.focus_errors, "precision": precision,
                     "single_case_limit": config.single_case_limit, "single_case_blend": blend,
                     "patience": 0 if run.mode is ValidationMode.TRAINING_CASE else config.patience,
                     "keep_margin": KEEP_MARGIN, "stop_margin": STOP_MARGIN, "csf_as_background": isinstance(trainer.loss, CsfAsBackgroundLoss),
                     "validation_scores": [round(s, 4) for s in validator.scores],
                     "freeze_encoder": config.freeze_encoder,
                     "freeze_batchnorm": config.freeze_batchnorm, "input_noise": config.input_noise,
                     "augment": config.augment, "resample_labels": config.resample_labels, "seed": config.seed,
                     "batch_size": config.batch_size, "device": str(run.device),
                     "continued": run.record is not None,
                     "wall_time_s": round(time.perf_counter() - run.started, 1)},
    }
    path = model_store.save_version(trainer.network, run.save_name, metadata)
    run.log(f"saved {run.save_name} (weights of step {best['step']}) to {path}")
    return FinetuneResult(status, path, run.save_name, trainer.step, best["step"], _public(before), _public(after),
                          read_metadata(path))


def blend_toward_base(network, base_path: Path, alpha: float) -> None:
    """Set ``network``'s weights to base + alpha * (weights - base) (WiSE-FT, Wortsman et al., CVPR 2022);
    integer buffers (BatchNorm's batch counts) are left as they are."""
    base = load_model(base_path)[0].state_dict()
    state = {}
    for name, value in network.state_dict().items():
        start = base[name].to(value.device, value.dtype)
        state[name] = start + alpha * (value - start) if value.is_floating_point() else value
    network.load_state_dict(state)


def _minutes(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60} min {seconds % 60:02d} s"


def _public(validation: dict) -> dict:
    return {"mean": validation["mean"], "dice": validation["dice"]}


def _result_event(result: FinetuneResult) -> dict:
    return {"status": result.status, "name": result.name, "path": str(result.path) if result.path else None,
            "steps_run": result.steps_run, "best_step": result.best_step, "before": result.before,
            "after": result.after}
