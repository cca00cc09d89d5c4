"""The loss study of Wong et al. 2018 on this project's data: one ``Trainer`` run per arm, resumable.

An *arm* is a network + loss (``ARMS``; ``vnet`` is V-Net with the loss of the best Wong arm, chosen
automatically by mean held-out synthetic Dice once the Wong arms are done). Each arm runs at every learning
rate of the study; a run lives in ``<out>/<run id>/`` (the arm's name, plus ``_lr<rate>`` when the study has
several rates). ``<out>/study.json`` records the settings: a study is continued only with the same settings.
Rerunning continues where it stopped: a run that reached its last step is skipped, an interrupted one resumes
from its ``last.pt``, a diverged one is left as it is (and reported). After the runs, ``evaluate_runs`` scores
each run's best weights on the held-out synthetic maps and the real dev scans (``report.py`` writes the
tables and plots). Docs: ``docs/LOSS_STUDY.md``.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..imageio.atomic import write_text_atomic
from ..paths import VALIDATION_SIZE

MANIFEST = "study.json"
EVALUATION = "evaluation.json"
WONG = "wong2018"
# arm -> (architecture, loss name, loss parameters); the order is the order of the runs and of the tables
ARMS = {
    "dice": (WONG, "dice", {}),
    "logdice": (WONG, "logdice", {"gamma": 1.0}),
    "wce": (WONG, "wce", {}),
    "gdl": (WONG, "gdl", {}),
    "explog": (WONG, "explog", {"gamma_dice": 0.3, "gamma_cross": 0.3}),
    "explog_g1": (WONG, "explog", {"gamma_dice": 1.0, "gamma_cross": 1.0}),
    "explog_g2": (WONG, "explog", {"gamma_dice": 2.0, "gamma_cross": 2.0}),
}
VNET = "vnet"
ALL_ARMS = (*ARMS, VNET)
# settings that define the comparison: a study folder is continued only when these are unchanged
COMPARED = ("steps", "patch_size", "arms", "learning_rates", "seed", "validate_every", "precision",
            "validation_size", "synthesis", "training_maps", "held_out_maps", "real_cases")


class StudyError(ValueError):
    pass


def parse_arms(text: str | None) -> list[str]:
    if not text:
        return list(ALL_ARMS)
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL_ARMS]
    if unknown:
        raise StudyError(f"unknown arm(s) {', '.join(unknown)}; valid arms: {', '.join(ALL_ARMS)}")
    if names == [VNET]:
        raise StudyError("the vnet arm takes the loss of the best Wong arm: list at least one Wong arm too")
    return [n for n in ALL_ARMS if n in names]  # canonical order: the Wong arms first, vnet last


def format_lr(lr: float) -> str:
    mantissa, exponent = f"{lr:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


@dataclass
class StudySettings:
    steps: int
    patch_size: tuple
    label_maps: list  # training label maps (paths)
    validation_maps: list  # held-out label maps (paths): best-checkpoint choice and synthetic scores
    real_pairs: list = field(default_factory=list)  # [(image, aseg, case name)]: reported, never used to choose
    arms: list = field(default_factory=lambda: list(ALL_ARMS))
    learning_rates: list = field(default_factory=lambda: [1e-3])
    seed: int = 0
    validate_every: int = 500
    checkpoint_every: int = 100
    precision: str = "fp32"
    validation_size: tuple = VALIDATION_SIZE
    synthesis: dict = field(default_factory=dict)
    device: str = "cpu"
    # evaluation only (not a comparison setting): re-estimate each run's BatchNorm statistics on this many fresh
    # synthetic brains (same draw for every run) before scoring its best weights; 0: score them as trained
    recalibrate_bn: int = 0

    def __post_init__(self):
        self.patch_size = tuple(int(n) for n in self.patch_size)
        self.validation_size = tuple(int(n) for n in self.validation_size)
        self.real_pairs = [tuple(p) for p in self.real_pairs]
        self.learning_rates = [float(lr) for lr in self.learning_rates]
        self.arms = parse_arms(",".join(self.arms))
        if not self.learning_rates or any(lr <= 0 for lr in self.learning_rates):
            raise StudyError(f"learning rates must be > 0, got {self.learning_rates}")
        if len(set(self.learning_rates)) != len(self.learning_rates):
            raise StudyError(f"learning rates repeat: {self.learning_rates}")
        if not self.validation_maps:
            raise StudyError("the study needs held-out label maps: the best checkpoint is chosen on them")
        if int(self.recalibrate_bn) < 0:
            raise StudyError(f"--recalibrate-bn must be >= 0 samples, got {self.recalibrate_bn}")

    def compared(self) -> dict:
        """The settings that define the comparison, in a form that does not depend on where the data lie."""
        values = asdict(self)
        values["patch_size"], values["validation_size"] = list(self.patch_size), list(self.validation_size)
        values["training_maps"] = [Path(p).name for p in self.label_maps]
        values["held_out_maps"] = [Path(p).name for p in self.validation_maps]
        values["real_cases"] = [p[2] for p in self.real_pairs]
        return {key: values[key] for key in COMPARED}


def run_id(arm: str, lr: float, settings: StudySettings) -> str:
    return arm if len(settings.learning_rates) == 1 else f"{arm}_lr{format_lr(lr)}"


# -- manifest -----------------------------------------------------------------------------------------------
def _write_json(data: dict, path: Path) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, default=float))


def load_manifest(out) -> dict | None:
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise StudyError(f"{path} is not valid JSON ({error}); repair or remove it") from None


def settings_from_manifest(manifest: dict, **overrides) -> StudySettings:
    recorded = dict(manifest["settings"])
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
    recorded = StudySettings(**manifest["settings"]).compared()
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
    else:
        out.mkdir(parents=True, exist_ok=True)
        table = load_label_table()
        manifest = {"version": 1, "settings": _settings_json(settings), "label_table_version": table.version,
                    "structure_share": structure_shares(settings.label_maps, table), "vnet_loss": None, "runs": {}}
    _write_json(manifest, out / MANIFEST)
    return manifest


def record_evaluation_settings(out, manifest: dict, settings: StudySettings) -> None:
    """A report-only call may change how runs are scored (``recalibrate_bn``): remember it, so that the next
    call without the option scores them the same way."""
    if manifest["settings"].get("recalibrate_bn", 0) != settings.recalibrate_bn:
        manifest["settings"]["recalibrate_bn"] = settings.recalibrate_bn
        _write_json(manifest, Path(out) / MANIFEST)


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


def _run_one(out: Path, manifest: dict, settings: StudySettings, rid: str, arm: str, lr: float,
             emit: Callable[[dict], None]) -> str:
    from ..training.trainer import Trainer, TrainingConfig

    architecture, loss, params = ARMS[arm] if arm != VNET else (VNET, *ARMS[manifest["vnet_loss"]][1:])
    run_dir = out / rid
    record = manifest["runs"].setdefault(rid, {})
    record.update({"arm": arm, "architecture": architecture, "loss": loss, "loss_params": params, "lr": lr})
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
        loss_params=dict(params), learning_rate=lr, patch_size=settings.patch_size, steps=settings.steps,
        checkpoint_every=settings.checkpoint_every, validate_every=settings.validate_every, seed=settings.seed,
        device=settings.device, precision=settings.precision, validation_size=settings.validation_size,
        synthesis=dict(settings.synthesis))
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
    _write_json(manifest, out / MANIFEST)
    emit({"event": "run_end", "run": rid, **result})
    return result["status"]


def choose_vnet_loss(out: Path, settings: StudySettings) -> tuple[str, dict]:
    """The Wong arm with the best held-out synthetic Dice (best checkpoint), averaged over the learning rates;
    a run without a finite score counts as Dice 0."""
    scores = {}
    for arm in (a for a in settings.arms if a != VNET):
        values = []
        for lr in settings.learning_rates:
            state = checkpoint_state(out / run_id(arm, lr, settings))
            values.append(state["best_score"] if state and math.isfinite(state["best_score"]) else 0.0)
        scores[arm] = float(np.mean(values))
    return max(scores, key=scores.get), scores  # ties: the first arm in ARMS order


def run_study(out, settings: StudySettings, on_event: Callable[[dict], None] | None = None) -> dict:
    """Run (or continue) every arm; returns {"status": "finished" | "stopped", "runs": {run id: status}}."""
    out = Path(out)
    emit = on_event or (lambda event: None)
    manifest = open_study(out, settings)
    statuses = {}
    plan = [(arm, lr) for arm in settings.arms if arm != VNET for lr in settings.learning_rates]
    for arm, lr in plan:
        rid = run_id(arm, lr, settings)
        statuses[rid] = _run_one(out, manifest, settings, rid, arm, lr, emit)
        _write_json(manifest, out / MANIFEST)
        if statuses[rid] == "stopped":
            return {"status": "stopped", "runs": statuses}
    if VNET in settings.arms:
        if manifest.get("vnet_loss") is None:  # chosen once: later reruns keep the choice
            manifest["vnet_loss"], manifest["vnet_choice_scores"] = choose_vnet_loss(out, settings)
            _write_json(manifest, out / MANIFEST)
        emit({"event": "vnet_choice", "arm": manifest["vnet_loss"], "scores": manifest.get("vnet_choice_scores")})
        for lr in settings.learning_rates:
            rid = run_id(VNET, lr, settings)
            statuses[rid] = _run_one(out, manifest, settings, rid, VNET, lr, emit)
            _write_json(manifest, out / MANIFEST)
            if statuses[rid] == "stopped":
                return {"status": "stopped", "runs": statuses}
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
        settings.label_maps, SynthesisSettings(**{**settings.synthesis, "patch_size": settings.validation_size}),
        device=device)
    rng = torch.Generator().manual_seed(RECALIBRATION_SEED)
    return recalibrate_batchnorm(network, lambda: generator.batch(1, rng)[0].to(device), settings.recalibrate_bn)


def evaluate_run(run_dir: Path, settings: StudySettings, device: str) -> dict | None:
    """Per-structure Dice of ``run_dir/best.safetensors`` on the held-out synthetic maps and the real scans;
    cached in ``evaluation.json`` while the weights and the evaluation inputs are unchanged."""
    from ..labels import load_label_table
    from ..models.files import load_model
    from ..training.validation import real_dice, synthetic_dice

    best = Path(run_dir) / "best.safetensors"
    if not best.is_file():
        return None
    stat = best.stat()
    key = {"weights": [stat.st_mtime_ns, stat.st_size], "held_out": [Path(p).name for p in settings.validation_maps],
           "real": [p[2] for p in settings.real_pairs], "size": list(settings.validation_size),
           "recalibrate_bn": int(settings.recalibrate_bn)}
    cache = Path(run_dir) / EVALUATION
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return cached
    table = load_label_table()
    network, metadata = load_model(best, device=device)
    if settings.recalibrate_bn:
        recalibrate(network, settings, device)
    result = {"key": key, "best_step": metadata.get("steps"),
              "synthetic": synthetic_dice(network, table, settings.validation_maps, settings.validation_size,
                                          device, settings.synthesis),
              "real": real_dice(network, table, settings.real_pairs, device) if settings.real_pairs else {}}
    _write_json(result, cache)
    return result


def evaluate_runs(out, settings: StudySettings, manifest: dict, on_event=None) -> dict:
    emit = on_event or (lambda event: None)
    results = {}
    for rid in manifest.get("runs", {}):
        emit({"event": "evaluate", "run": rid})
        results[rid] = evaluate_run(Path(out) / rid, settings, settings.device)
    return results
