"""The loss study of Wong et al. 2018 on this project's data: one ``Trainer`` run per arm, learning rate and seed,
resumable.

What is compared, the scale and the run names are in ``settings.py``. A run lives in ``<out>/<run id>/``;
``<out>/study.json`` records the settings: a study is continued only with the same settings. Rerunning continues
where it stopped: a run that reached its last step is skipped, an interrupted one resumes from its ``last.pt``,
a diverged one is left as it is (and reported). After the runs, ``evaluate_runs`` scores each run's best weights
on the held-out synthetic maps and the real dev scans at the study's scale (``report.py`` writes the tables and
plots). Docs: ``docs/LOSS_STUDY.md``.
"""
from __future__ import annotations

import json
import math
import os
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from ..imageio.atomic import write_text_atomic
from .settings import (ALL_ARMS, ARMS, COMPARED, VNET, WONG, StudyError, StudySettings, format_lr,  # noqa: F401
                       parse_arms, planned_runs, run_id, upgrade_recorded)

MANIFEST = "study.json"
EVALUATION = "evaluation.json"
MANIFEST_VERSION = 2


# -- manifest -----------------------------------------------------------------------------------------------
def _write_json(data: dict, path: Path) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, default=float))


@contextmanager
def _manifest_lock(out: Path, wait_s: float = 60.0):
    """Parts of one study (``--part``) run as separate processes and all write ``study.json``: each write is a
    read-change-write under this lock file, so no part drops another's records. A lock older than ``wait_s``
    belongs to a killed process and is taken over."""
    lock = Path(out) / (MANIFEST + ".lock")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            break
        except FileExistsError:
            if time.monotonic() > deadline:
                lock.unlink(missing_ok=True)
                deadline = time.monotonic() + wait_s
            time.sleep(0.05)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def update_manifest(out, manifest: dict, runs: tuple = (), keys: tuple = ()) -> None:
    """Write this process's records ``runs`` and top-level ``keys`` of ``manifest`` into ``out/study.json``,
    keeping what other parts wrote there meanwhile; ``manifest`` gets their records too."""
    with _manifest_lock(out):
        on_disk = load_manifest(out) or {key: value for key, value in manifest.items() if key != "runs"}
        on_disk.setdefault("runs", {})
        for rid in runs:
            on_disk["runs"][rid] = manifest["runs"][rid]
        for key in keys:
            on_disk[key] = manifest[key]
        _write_json(on_disk, Path(out) / MANIFEST)
    manifest.update(on_disk)


def load_manifest(out) -> dict | None:
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise StudyError(f"{path} is not valid JSON ({error}); repair or remove it") from None


def settings_from_manifest(manifest: dict, **overrides) -> StudySettings:
    recorded = upgrade_recorded(manifest["settings"])
    recorded.update({k: v for k, v in overrides.items() if v is not None})
    return StudySettings(**recorded)


def structure_shares(label_maps, table) -> dict:
    """Voxel share of each structure over the training label maps (of all non-background voxels)."""
    import SimpleITK as sitk

    counts = np.zeros(table.num_classes, dtype=np.float64)
    for path in label_maps:
        labels = table.map_freesurfer(sitk.GetArrayFromImage(sitk.ReadImage(str(path))))
        counts += np.bincount(labels.ravel(), minlength=table.num_classes)[: table.num_classes]
    counts[0] = 0
    shares = counts / max(counts.sum(), 1.0)
    return {table.names[i]: float(shares[i]) for i in range(1, table.num_classes)}


def check_settings(out, manifest: dict, settings: StudySettings) -> None:
    """StudyError naming every comparison setting that differs from the recorded study."""
    recorded = StudySettings(**upgrade_recorded(manifest["settings"])).compared()
    now = settings.compared()
    changed = [f"{key}: recorded {recorded[key]!r}, now {now[key]!r}" for key in COMPARED if recorded[key] != now[key]]
    if changed:
        raise StudyError(f"{Path(out) / MANIFEST} records a study with other settings ({'; '.join(changed)}). "
                         "Continue it with its own settings (leave these options out) or use a new --out folder.")


def open_study(out, settings: StudySettings) -> dict:
    """Create ``out/study.json`` or check that the recorded study has these settings (StudyError if not)."""
    from ..labels import load_label_table

    out = Path(out)
    manifest = load_manifest(out)
    if manifest is not None:
        check_settings(out, manifest, settings)
        manifest["settings"] = _settings_json(settings)  # data paths may have moved (another machine)
        update_manifest(out, manifest, keys=("settings",))
        return manifest
    else:
        out.mkdir(parents=True, exist_ok=True)
        table = load_label_table()
        from .scale import structure_voxels

        manifest = {"version": MANIFEST_VERSION, "settings": _settings_json(settings),
                    "label_table_version": table.version,
                    "structure_share": structure_shares(settings.label_maps, table),
                    "structure_voxels": structure_voxels(settings, table), "vnet_loss": None, "runs": {}}
    update_manifest(out, manifest, keys=tuple(key for key in manifest if key != "runs"))
    return manifest


def record_evaluation_settings(out, manifest: dict, settings: StudySettings) -> None:
    """A report-only call may change how runs are scored (``recalibrate_bn``): remember it, so that the next
    call without the option scores them the same way."""
    if manifest["settings"].get("recalibrate_bn", 0) != settings.recalibrate_bn:
        manifest["settings"]["recalibrate_bn"] = settings.recalibrate_bn
        update_manifest(out, manifest, keys=("settings",))


def _settings_json(settings: StudySettings) -> dict:
    values = asdict(settings)
    values["real_pairs"] = [list(p) for p in settings.real_pairs]
    return json.loads(json.dumps(values))


# -- runs ---------------------------------------------------------------------------------------------------
def checkpoint_state(run_dir: Path) -> dict | None:
    import torch

    path = Path(run_dir) / "last.pt"
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {"step": int(state["step"]), "best_score": float(state["best_score"]), "elapsed": float(state["elapsed"])}


def _trim_log(run_dir: Path, step: int) -> None:
    """Drop log records past the checkpoint: the resumed run writes them again."""
    from ..training.plots import read_log

    log = run_dir / "log.jsonl"
    if log.is_file():
        kept = [r for r in read_log(log) if r.get("step", 0) <= step]
        write_text_atomic(log, "".join(json.dumps(r) + "\n" for r in kept))


def _fresh(run_dir: Path) -> None:
    """A run without a checkpoint starts over: remove what a killed earlier attempt left behind."""
    for name in ("log.jsonl", "best.safetensors", "best.json", "latest.safetensors", "latest.json", EVALUATION):
        (run_dir / name).unlink(missing_ok=True)


def _run_one(out: Path, manifest: dict, settings: StudySettings, rid: str, arm: str, lr: float, seed: int,
             emit: Callable[[dict], None]) -> str:
    from ..training.trainer import Trainer, TrainingConfig

    architecture, loss, params = ARMS[arm] if arm != VNET else (VNET, *ARMS[manifest["vnet_loss"]][1:])
    run_dir = out / rid
    record = manifest["runs"].setdefault(rid, {})
    record.update({"arm": arm, "architecture": architecture, "loss": loss, "loss_params": params, "lr": lr,
                   "seed": seed})
    state = checkpoint_state(run_dir)
    if record.get("status") == "diverged":
        emit({"event": "run_skip", "run": rid, "reason": f"diverged at step {record.get('diverged_at')}"})
        return "diverged"
    if state is not None and state["step"] >= settings.steps:
        record.update(status="finished", step=state["step"], best_score=state["best_score"])
        emit({"event": "run_skip", "run": rid, "reason": f"finished ({state['step']} steps)"})
        return "finished"
    config = TrainingConfig(
        label_maps=list(settings.label_maps), validation_maps=list(settings.validation_maps),
        real_pairs=list(settings.real_pairs), run_dir=str(run_dir), architecture=architecture, loss=loss,
        loss_params=dict(params), learning_rate=lr, lr_schedule=settings.lr_schedule,
        warmup_steps=settings.warmup_steps, batch_size=settings.batch_size, patch_size=settings.patch_size,
        steps=settings.steps, checkpoint_every=settings.checkpoint_every, validate_every=settings.validate_every,
        seed=seed, device=settings.device, precision=settings.precision, validation_size=settings.validation_size,
        validation_draws=settings.validation_draws, validation_bn_samples=settings.validation_bn_samples,
        synthesis=settings.training_synthesis)
    if state is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        _fresh(run_dir)
    trainer = Trainer(config, on_event=lambda event: emit({**event, "run": rid}))
    if state is not None:
        _trim_log(run_dir, state["step"])
        trainer.resume()
    emit({"event": "run_start", "run": rid, "from_step": trainer.step, "steps": settings.steps})
    result = trainer.run()
    record.update(status=result["status"], step=result["step"], best_score=result["best_score"],
                  device=str(trainer.device))
    if result["status"] == "diverged":
        record["diverged_at"] = result["step"] + 1
    update_manifest(out, manifest, runs=(rid,))
    emit({"event": "run_end", "run": rid, **result})
    return result["status"]


def choose_vnet_loss(out: Path, settings: StudySettings) -> tuple[str, dict]:
    """The Wong arm with the best held-out synthetic Dice (best checkpoint), averaged over the learning rates and
    seeds; a run without a finite score counts as Dice 0."""
    values = {}
    for rid, arm, _, _ in planned_runs(settings, [a for a in settings.arms if a != VNET]):
        state = checkpoint_state(out / rid)
        values.setdefault(arm, []).append(state["best_score"] if state and math.isfinite(state["best_score"]) else 0.0)
    scores = {arm: float(np.mean(v)) for arm, v in values.items()}
    return max(scores, key=scores.get), scores  # ties: the first arm in ARMS order


def parse_part(text: str) -> tuple[int, int]:
    """``K/N`` (``--part``): this process trains the K-th of N interleaved shares of the planned runs."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise StudyError(f"--part must be K/N (e.g. 1/2), got {text!r}") from None
    if not 1 <= k <= n:
        raise StudyError(f"--part {text}: K must lie in 1..N")
    return k, n


def share(runs: list, part: tuple[int, int]) -> list:
    """Part K of N gets every N-th run from the K-th on: the parts advance through seeds and rates together."""
    k, n = part
    return runs[k - 1::n]


def unfinished_runs(out: Path, settings: StudySettings, runs: list) -> list:
    """Run ids of ``runs`` that neither reached their last step nor diverged (as recorded by any part)."""
    recorded = (load_manifest(out) or {}).get("runs", {})
    left = []
    for rid, *_ in runs:
        state = checkpoint_state(out / rid)
        if recorded.get(rid, {}).get("status") != "diverged" and (state is None or state["step"] < settings.steps):
            left.append(rid)
    return left


def _run_all(out: Path, manifest: dict, settings: StudySettings, runs: list, statuses: dict, emit) -> bool:
    """Run ``runs``; False when a run was stopped (the study stops with it)."""
    for rid, arm, lr, seed in runs:
        statuses[rid] = _run_one(out, manifest, settings, rid, arm, lr, seed, emit)
        if statuses[rid] == "stopped":
            return False
    return True


def run_study(out, settings: StudySettings, on_event: Callable[[dict], None] | None = None,
              part: tuple[int, int] = (1, 1)) -> dict:
    """Run (or continue) every arm, or this process's ``part`` of them; returns {"status": "finished" | "stopped"
    | "waiting", "runs": {run id: status}}. "waiting": this part is done but the V-Net runs need every part's
    Wong runs finished, or other parts' runs remain; run this part again (or report) once they are."""
    from .scale import missing

    out = Path(out)
    emit = on_event or (lambda event: None)
    manifest = open_study(out, settings)
    for structure, cases in missing(manifest.get("structure_voxels", {}).get("synthetic", {})).items():
        emit({"event": "log", "kind": "scale", "message": f"{structure} has no voxel at {settings.grid_spacing:g} mm "
                                                          f"in held-out image(s) {', '.join(cases)}"})
    statuses = {}
    wong = planned_runs(settings, [a for a in settings.arms if a != VNET])
    if not _run_all(out, manifest, settings, share(wong, part), statuses, emit):
        return {"status": "stopped", "runs": statuses}
    if VNET in settings.arms:
        left = unfinished_runs(out, settings, wong)
        if left:
            emit({"event": "log", "kind": "waiting", "message": f"the V-Net arm waits for the other parts' runs "
                                                                f"({', '.join(left)}); run this part again after them"})
            return {"status": "waiting", "runs": statuses}
        if manifest.get("vnet_loss") is None:  # chosen once: later reruns keep the choice
            manifest["vnet_loss"], manifest["vnet_choice_scores"] = choose_vnet_loss(out, settings)
            update_manifest(out, manifest, keys=("vnet_loss", "vnet_choice_scores"))
        emit({"event": "vnet_choice", "arm": manifest["vnet_loss"], "scores": manifest.get("vnet_choice_scores")})
        if not _run_all(out, manifest, settings, share(planned_runs(settings, [VNET]), part), statuses, emit):
            return {"status": "stopped", "runs": statuses}
    left = unfinished_runs(out, settings, planned_runs(settings))
    if left:
        emit({"event": "log", "kind": "waiting", "message": f"this part is done; the report waits for the other "
                                                            f"parts' runs ({', '.join(left)})"})
        return {"status": "waiting", "runs": statuses}
    return {"status": "finished", "runs": statuses}


# -- evaluation of the best weights -------------------------------------------------------------------------
RECALIBRATION_SEED = 77


def recalibrate(network, settings: StudySettings, device: str):
    """BatchNorm statistics re-estimated on ``settings.recalibrate_bn`` synthetic brains from the training maps,
    whole-brain size, fixed seed: batch-1 running averages are noisy, and that noise should not decide the
    comparison (``training/bn_recalibration.py``)."""
    import torch

    from ..synthesis.generator import SynthesisSettings, SyntheticBrainGenerator
    from ..training.bn_recalibration import recalibrate_batchnorm

    generator = SyntheticBrainGenerator(
        settings.label_maps, SynthesisSettings(**settings.synthesis_settings(settings.validation_size)), device=device)
    rng = torch.Generator().manual_seed(RECALIBRATION_SEED)
    return recalibrate_batchnorm(network, lambda: generator.batch(1, rng)[0].to(device), settings.recalibrate_bn)


class _TrainingSamples:
    """The training-sample generator of the study's runs, made on first use (it loads every training map): the
    BatchNorm re-estimation of validation (``validation_bn_samples``) is redone with it before scoring."""

    def __init__(self, settings: StudySettings, device: str):
        self.settings, self.device, self.generator = settings, device, None

    def __call__(self):
        if self.generator is None:
            from ..synthesis.generator import SynthesisSettings, SyntheticBrainGenerator

            self.generator = SyntheticBrainGenerator(
                self.settings.label_maps, SynthesisSettings(**self.settings.synthesis_settings()), device=self.device)
        return self.generator


def evaluate_run(run_dir: Path, settings: StudySettings, device: str, samples: _TrainingSamples | None = None) -> dict | None:
    """Per-structure Dice of ``run_dir/best.safetensors`` on the held-out synthetic maps and the real scans at the
    study's scale, BatchNorm as ``--recalibrate-bn`` says, else as validation handled it; cached in
    ``evaluation.json`` while the weights and the evaluation inputs are unchanged."""
    from ..labels import load_label_table
    from ..models.files import load_model
    from ..training.bn_recalibration import recalibrated_copy
    from ..training.validation import real_dice, synthetic_dice

    best = Path(run_dir) / "best.safetensors"
    if not best.is_file():
        return None
    stat = best.stat()
    key = {"weights": [stat.st_mtime_ns, stat.st_size], "held_out": [Path(p).name for p in settings.validation_maps],
           "real": [p[2] for p in settings.real_pairs], "size": list(settings.validation_size),
           "recalibrate_bn": int(settings.recalibrate_bn), "grid_spacing": settings.grid_spacing,
           "draws": settings.validation_draws, "validation_bn_samples": settings.validation_bn_samples}
    cache = Path(run_dir) / EVALUATION
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return cached
    table = load_label_table()
    network, metadata = load_model(best, device=device)
    if settings.recalibrate_bn:
        recalibrate(network, settings, device)
    elif settings.validation_bn_samples:
        network = recalibrated_copy(network, (samples or _TrainingSamples(settings, device))(),
                                    settings.validation_bn_samples)
    result = {"key": key, "best_step": metadata.get("steps"),
              "synthetic": synthetic_dice(network, table, settings.validation_maps, settings.validation_size,
                                          device, settings.training_synthesis, settings.validation_draws),
              "real": real_dice(network, table, settings.real_pairs, device, settings.grid_spacing)
              if settings.real_pairs else {}}
    _write_json(result, cache)
    return result


def evaluate_runs(out, settings: StudySettings, manifest: dict, on_event=None) -> dict:
    emit = on_event or (lambda event: None)
    samples = _TrainingSamples(settings, settings.device)
    results = {}
    for rid in manifest.get("runs", {}):
        emit({"event": "evaluate", "run": rid})
        results[rid] = evaluate_run(Path(out) / rid, settings, settings.device, samples)
    return results
