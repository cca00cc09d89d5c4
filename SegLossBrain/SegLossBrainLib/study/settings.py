"""What a loss study compares and how its runs are named: the arms, the settings recorded in ``study.json``, the
study's scale (grid spacing, patch and validation sizes), and the run ids.

An *arm* is a network + loss (``ARMS``; ``vnet`` is V-Net with the loss of the best Wong arm). Every arm runs at
every learning rate and every seed of the study; one such run is ``<arm>_lr<rate>_s<seed>``. The settings in
``COMPARED`` define the comparison: a study folder is continued only when they are unchanged. Studies recorded
before seeds, grid spacing, schedule and validation options existed (``study.json`` version 1) are read with
the values they ran with (``LEGACY``) and keep their run names.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..paths import VALIDATION_SIZE
from ..preprocessing.grid_constants import NETWORK_SPACING_MM, SIZE_MULTIPLE

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
    "dice_ce": (WONG, "dice_ce", {}),  # linear Dice + cross-entropy, 1:1 (the registry's defaults)
}
VNET = "vnet"
ALL_ARMS = (*ARMS, VNET)
# settings that define the comparison: a study folder is continued only when these are unchanged
COMPARED = ("steps", "patch_size", "arms", "learning_rates", "seeds", "validate_every", "precision",
            "validation_size", "synthesis", "training_maps", "held_out_maps", "real_cases", "grid_spacing",
            "lr_schedule", "warmup_steps", "batch_size", "validation_bn_samples", "validation_draws")
# what a version-1 study.json (made before these settings existed) ran with
LEGACY = {"grid_spacing": NETWORK_SPACING_MM, "lr_schedule": "constant", "warmup_steps": 0, "batch_size": 1,
          "validation_bn_samples": 0, "validation_draws": 1, "legacy_run_ids": True}
PAPER_FIELD_MM = 128 * NETWORK_SPACING_MM  # the paper's whole 128^3 images, at this project's 1.5 mm
MAX_GRID_SPACING_MM = 4.0  # the generator's coarsest simulated acquisition (SynthesisSettings.max_resolution_mm)


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


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise StudyError(f"--seeds takes whole numbers separated by commas, e.g. 0,1; got {text!r}") from None
    return seeds


def format_lr(lr: float) -> str:
    mantissa, exponent = f"{lr:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def covering_size(extent_mm, spacing: float) -> tuple:
    """Voxels per axis, each a multiple of 16, that cover ``extent_mm`` (per axis) at ``spacing``."""
    return tuple(int(math.ceil(e / spacing / SIZE_MULTIPLE - 1e-9)) * SIZE_MULTIPLE for e in extent_mm)


def default_patch_size(spacing: float) -> tuple:
    """The training patch covering the paper's field (128^3 at 1.5 mm = 192 mm): 64^3 at 3 mm, the whole head."""
    return covering_size((PAPER_FIELD_MM,) * 3, spacing)


def default_validation_size(spacing: float) -> tuple:
    """The held-out grid covering the whole brain (``VALIDATION_SIZE`` at 1.5 mm): 64x80x64 at 3 mm."""
    return covering_size([n * NETWORK_SPACING_MM for n in VALIDATION_SIZE], spacing)


@dataclass
class StudySettings:
    steps: int
    label_maps: list  # training label maps (paths)
    validation_maps: list  # held-out label maps (paths): best-checkpoint choice and synthetic scores
    patch_size: tuple | None = None  # None: default_patch_size(grid_spacing)
    real_pairs: list = field(default_factory=list)  # [(image, aseg, case name)]: reported, never used to choose
    arms: list = field(default_factory=lambda: list(ALL_ARMS))
    learning_rates: list = field(default_factory=lambda: [1e-3, 1e-4])
    seeds: list = field(default_factory=lambda: [0, 1])
    validate_every: int = 200
    checkpoint_every: int = 100
    precision: str = "bf16"
    validation_size: tuple | None = None  # None: default_validation_size(grid_spacing)
    synthesis: dict = field(default_factory=dict)
    grid_spacing: float = 3.0  # mm: training samples, held-out maps and real scans are all on this grid
    lr_schedule: str = "poly"  # or "constant" (training/trainer.py)
    warmup_steps: int = 0
    batch_size: int = 1
    # before each validation, BatchNorm statistics re-estimated on this many training samples (fixed draw) on a
    # copy of the network; 0: validate with the running averages as trained
    validation_bn_samples: int = 16
    validation_draws: int = 2  # held-out images per held-out map
    device: str = "cpu"
    # evaluation only (not a comparison setting): re-estimate each run's BatchNorm statistics on this many fresh
    # synthetic brains (same draw for every run) before scoring its best weights; 0: as in validation
    recalibrate_bn: int = 0
    legacy_run_ids: bool = False  # a version-1 study: runs named <arm> or <arm>_lr<rate>

    def __post_init__(self):
        self.grid_spacing = float(self.grid_spacing)
        if not 0 < self.grid_spacing <= MAX_GRID_SPACING_MM:
            raise StudyError(f"--grid-spacing must lie in (0, {MAX_GRID_SPACING_MM:g}] mm (the generator simulates "
                             f"acquisitions up to {MAX_GRID_SPACING_MM:g} mm), got {self.grid_spacing:g}")
        self.patch_size = tuple(int(n) for n in (self.patch_size or default_patch_size(self.grid_spacing)))
        self.validation_size = tuple(int(n) for n in (self.validation_size or
                                                      default_validation_size(self.grid_spacing)))
        self.real_pairs = [tuple(p) for p in self.real_pairs]
        self.learning_rates = [float(lr) for lr in self.learning_rates]
        self.seeds = [int(s) for s in self.seeds]
        self.arms = parse_arms(",".join(self.arms))
        if not self.learning_rates or any(lr <= 0 for lr in self.learning_rates):
            raise StudyError(f"learning rates must be > 0, got {self.learning_rates}")
        for name, values in (("learning rates", self.learning_rates), ("seeds", self.seeds)):
            if len(set(values)) != len(values):
                raise StudyError(f"{name} repeat: {values}; list each once")
        if not self.seeds or any(s < 0 for s in self.seeds):
            raise StudyError(f"--seeds needs at least one seed >= 0, got {self.seeds}")
        if not self.validation_maps:
            raise StudyError("the study needs held-out label maps: the best checkpoint is chosen on them")
        for name in ("recalibrate_bn", "validation_bn_samples", "warmup_steps"):
            if int(getattr(self, name)) < 0:
                raise StudyError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.steps < 1 or self.validate_every < 1 or self.batch_size < 1 or self.validation_draws < 1:
            raise StudyError("--steps, --validate-every, --batch-size and --validation-draws must be >= 1")
        if self.lr_schedule not in ("constant", "poly"):
            raise StudyError(f"--lr-schedule must be constant or poly, got {self.lr_schedule!r}")
        from ..synthesis.generator import SynthesisSettings

        for size, option in ((self.patch_size, "--patch-size"), (self.validation_size, "--validation-size")):
            try:
                SynthesisSettings(**self.synthesis_settings(size))
            except (TypeError, ValueError) as error:
                raise StudyError(f"{option} {'x'.join(map(str, size))} at {self.grid_spacing:g} mm: {error}") from None

    def synthesis_settings(self, size=None) -> dict:
        """SynthesisSettings values of this study's grid (``size``: patch size, default the training patch)."""
        return {**self.synthesis, "spacing_mm": self.grid_spacing, "patch_size": tuple(size or self.patch_size)}

    @property
    def training_synthesis(self) -> dict:
        """The ``synthesis`` overrides a run's TrainingConfig gets: the study's options and its grid spacing."""
        return {**self.synthesis, "spacing_mm": self.grid_spacing}

    def compared(self) -> dict:
        """The settings that define the comparison, in a form that does not depend on where the data lie."""
        values = asdict(self)
        values["patch_size"], values["validation_size"] = list(self.patch_size), list(self.validation_size)
        values["training_maps"] = [Path(p).name for p in self.label_maps]
        values["held_out_maps"] = [Path(p).name for p in self.validation_maps]
        values["real_cases"] = [p[2] for p in self.real_pairs]
        return {key: values[key] for key in COMPARED}


def upgrade_recorded(values: dict) -> dict:
    """Settings as ``study.json`` recorded them, with what an older version ran with filled in."""
    values = dict(values)
    if "seeds" not in values:  # version 1: one seed, and none of the LEGACY settings
        values["seeds"] = [values.pop("seed", 0)]
        for key, value in LEGACY.items():
            values.setdefault(key, value)
    values.pop("seed", None)
    return values


def run_id(arm: str, lr: float, seed: int, settings: StudySettings) -> str:
    if settings.legacy_run_ids:
        return arm if len(settings.learning_rates) == 1 else f"{arm}_lr{format_lr(lr)}"
    return f"{arm}_lr{format_lr(lr)}_s{seed}"


def planned_runs(settings: StudySettings, arms=None) -> list[tuple[str, str, float, int]]:
    """(run id, arm, lr, seed): seed by seed, then rate by rate, the arms in table order within each."""
    arms = settings.arms if arms is None else arms
    return [(run_id(arm, lr, seed, settings), arm, lr, seed)
            for seed in settings.seeds for lr in settings.learning_rates for arm in arms]
