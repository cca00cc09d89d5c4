"""A training run's settings (``TrainingConfig``): data, network, loss, optimiser and learning-rate schedule,
patches, checkpoints, validation, early stopping; checked when made."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..paths import VALIDATION_SIZE


@dataclass
class TrainingConfig:
    label_maps: list  # training label maps (paths)
    run_dir: str
    validation_maps: list = field(default_factory=list)  # held-out label maps: synthetic validation
    brain_label_maps: list = field(default_factory=list)  # brain-only maps drawn FreeSurfer's way (paths)
    brain_maps_share: float = 0.5  # share of synthetic batches drawn from brain_label_maps when there are any
    composite_heads: int = 0  # full-head maps each brain-only map is also placed into (skull-on composites)
    composite_share: float = 0.5  # share of brain-only draws made from those composites when there are any
    real_pairs: list = field(default_factory=list)  # [(image path, aseg path, name)]: real validation
    labelled_scans: list = field(default_factory=list)  # [(image path, labels path)]: real scans trained on too
    labelled_fraction: float = 0.5  # share of batches drawn from labelled_scans when there are any
    labelled_rotation_deg: float = 0.0  # labelled_scans' patches turned by up to this about each axis
    labelled_scaling: float = 0.0  # and scaled by up to this fraction along each axis
    soft_labels: bool = False  # labelled_scans' targets as structure shares on the network grid (partial volume)
    architecture: str = "wong2018"
    loss: str = "explog"
    loss_params: dict = field(default_factory=dict)
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"  # or "poly": lr * (1 - step/steps)^0.9 (nnU-Net), so a fixed budget ends converged
    warmup_steps: int = 0  # linear ramp from lr/warmup to lr (a warm start's fresh Adam moments overshoot otherwise)
    input_noise_std: float | None = None  # the network's train-time input noise (None: the architecture default)
    batch_size: int = 1
    patch_size: tuple = (64, 64, 64)
    steps: int = 1000
    checkpoint_every: int = 100
    validate_every: int = 500
    validation_size: tuple = VALIDATION_SIZE  # whole brain at 1.5 mm
    validation_draws: int = 1  # held-out synthetic images per held-out map
    validation_bn_samples: int = 0  # BatchNorm re-estimated on this many training samples before each validation
    seed: int = 0
    device: str = "cpu"
    init_weights: str | None = None
    precision: str = "fp32"  # or "bf16": autocast (2x faster on CPUs with AVX512-BF16/AMX and on GPUs)
    synthesis: dict = field(default_factory=dict)  # SynthesisSettings overrides
    patience: int = 0  # early stopping: validations without a better score before stopping (0: never)
    patience_after: int = 0  # early stopping cannot end the run before this step (a run still warming up)
    freeze_encoder: bool = False  # train the decoder and head only (fine-tuning on few cases)
    freeze_batchnorm: bool = False  # keep BatchNorm running statistics (fine-tuning: a few cases must not
    # overwrite statistics estimated on thousands of images)

    def __post_init__(self):
        if min(self.steps, self.checkpoint_every, self.validate_every, self.validation_draws) < 1 \
                or min(self.patience, self.validation_bn_samples) < 0:
            raise ValueError("steps, checkpoint_every, validate_every and validation_draws must be >= 1, "
                             "patience and validation_bn_samples >= 0")
        if not self.label_maps:
            raise ValueError("no training label maps given")
        if self.learning_rate <= 0:
            raise ValueError(f"learning rate must be > 0, got {self.learning_rate}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {self.precision!r}")
        if self.optimizer not in ("adam", "nadam"):
            raise ValueError(f"optimizer must be adam or nadam, got {self.optimizer!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"learning-rate schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.brain_label_maps and not 0 < self.brain_maps_share < 1:
            raise ValueError(f"brain-only maps' share must lie strictly between 0 and 1, got {self.brain_maps_share}")
        if self.composite_heads < 0:
            raise ValueError(f"composite heads per brain-only map must be >= 0, got {self.composite_heads}")
        if self.composite_heads and not self.brain_label_maps:
            raise ValueError("composite heads are made from brain-only label maps: give --brain-label-maps too")
        if self.composite_heads and not 0 < self.composite_share < 1:
            raise ValueError(f"composite heads' share must lie strictly between 0 and 1, got {self.composite_share}")
        if self.labelled_scans and not 0 < self.labelled_fraction < 1:
            raise ValueError(f"labelled fraction must lie strictly between 0 and 1, got {self.labelled_fraction}")
        if not (0 <= self.labelled_rotation_deg <= 45 and 0 <= self.labelled_scaling < 0.5):
            raise ValueError("labelled scans' rotation must lie in [0, 45] degrees and scaling in [0, 0.5), got "
                             f"{self.labelled_rotation_deg} and {self.labelled_scaling}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup steps must be >= 0, got {self.warmup_steps}")
        if self.input_noise_std is not None and not (self.input_noise_std >= 0 and math.isfinite(self.input_noise_std)):
            raise ValueError(f"input noise std must be a finite number >= 0, got {self.input_noise_std}")

    def learning_rate_at(self, step: int) -> float:
        """Learning rate for the optimiser step that follows ``step`` completed steps."""
        rate = self.learning_rate
        if self.lr_schedule == "poly":
            rate *= (1.0 - min(step, self.steps - 1) / self.steps) ** 0.9
        if step < self.warmup_steps:
            rate *= (step + 1) / self.warmup_steps
        return rate


LR_SCHEDULES = ("constant", "poly")
