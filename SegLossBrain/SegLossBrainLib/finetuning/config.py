"""What a fine-tune is asked to do (``FinetuneConfig``, with the defaults docs/FINETUNING_RESULTS.md measured)
and what it returns (``FinetuneResult``)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..losses import get_loss
from ..training.config import LR_SCHEDULES

EventCallback = Callable[[dict], None]
# With a single case and no validation case nothing can tell learning the case from over-fitting it, and the
# full recipe moved another site's scan by -8 points (docs/FINETUNING_RESULTS.md): such a run stays small.
SINGLE_CASE_STEPS = 200
SINGLE_CASE_LR = 3e-5
# ... and the version saved is halfway between the base and the fine-tuned weights (WiSE-FT, Wortsman et al.,
# CVPR 2022): on the real dev pair it kept most of the gain on the case itself and halved the loss on the other
# site's scan (docs/FINETUNING_RESULTS.md, "Cross-site check").
SINGLE_CASE_BLEND = 0.5
# WCE alone fine-tunes with gentler label weights than training: the base's weights (Wong et al.'s inverse
# frequency to the power 0.5) raised to this exponent, i.e. inverse frequency to the power 0.125. On the synthetic
# site (165 steps at 96³) powers 0.5 / 0.25 / 0.125 / 0 gained +2.12 / +3.89 / +4.16 / +4.16 points
# (docs/FINETUNING_RESULTS.md): the rare structures' large weights overdraw them once the model is already good.
WCE_WEIGHT_EXPONENT = 0.25


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
    steps: int = 1000  # the most; on a CPU the time budget usually ends the run first (budget.py)
    max_minutes: float = 8.0  # time budget from start to saved version (0: none, ``steps`` alone decide)
    learning_rate: float = 3e-4  # peak, after warm-up; decays to 0 at the planned last step
    lr_schedule: str = "poly"
    warmup_steps: int = 20
    batch_size: int = 1
    patch_size: tuple = (96, 96, 96)  # +4.5 points on the synthetic site vs +3.3 at 64³, same compute
    validate_every: int = 0  # 0: ``validations`` spread evenly over the planned steps
    validations: int = 5
    patience: int = 2  # validations in a row below the base model's score before stopping (0: never), in the second
    # half only (``Validator.early_stop``): a dip below the best never stops a run
    focus_errors: bool = True  # favour patches where the base model disagrees with the labels (labelled_scans.py)
    single_case_limit: bool = True  # no held-out case: at most SINGLE_CASE_STEPS steps at SINGLE_CASE_LR, and
    # the saved weights are base + SINGLE_CASE_BLEND * (fine-tuned - base)
    csf_as_background: bool = True  # aseg pairs: the loss counts CSF and background as one class (aseg_loss.py)
    freeze_encoder: bool = False
    freeze_batchnorm: bool = True  # keep the base model's BatchNorm statistics (see BENCHMARKS / model card)
    input_noise: bool = False  # the network's training-time input noise (module docstring: off for fine-tuning)
    augment: bool = True
    resample_labels: bool = False  # labels on another grid than their image: nearest neighbour onto it
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # bf16 where it is native and faster (device.fast_precision), else fp32

    def to_json(self) -> dict:
        return {key: (list(value) if isinstance(value, tuple) else value) for key, value in asdict(self).items()}

    @classmethod
    def from_json(cls, values: dict) -> "FinetuneConfig":
        values = dict(values)
        values["pairs"] = [tuple(pair) for pair in values["pairs"]]
        values["validation"] = tuple(values["validation"]) if values.get("validation") else None
        values["patch_size"] = tuple(values["patch_size"])
        return cls(**values)

    def check(self) -> None:
        if not self.pairs:
            raise FinetuneError("no training pairs: give at least one (image, labelmap) pair")
        for pair in self.pairs + ([self.validation] if self.validation else []):
            if len(pair) != 2:
                raise FinetuneError(f"{pair!r}: a pair is (image, labelmap)")
            for path in pair:  # fail in a second, not after the lock and the first reads
                if not Path(path).exists():
                    raise FinetuneError(f"{path}: no such file or folder")
        if self.steps < 1 or self.validations < 1 or self.batch_size < 1 or self.patience < 0 \
                or self.validate_every < 0 or self.warmup_steps < 0:
            raise FinetuneError("steps, validations and batch_size must be >= 1; patience, validate_every and "
                                "warmup_steps >= 0")
        if not (self.max_minutes >= 0 and math.isfinite(self.max_minutes)):
            raise FinetuneError(f"time budget {self.max_minutes} min: give minutes >= 0 (0: no time limit)")
        if not (0 < self.learning_rate < 1):
            raise FinetuneError(f"learning rate {self.learning_rate} is outside (0, 1); 3e-4 suits fine-tuning")
        if self.lr_schedule not in LR_SCHEDULES:
            raise FinetuneError(f"learning-rate schedule {self.lr_schedule!r}: choose {' or '.join(LR_SCHEDULES)}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise FinetuneError(f"precision {self.precision!r}: choose auto, fp32 or bf16")
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
