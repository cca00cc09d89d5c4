"""The one training loop: synthetic brains in, checkpoints and compact weights out.

Every step draws a new synthetic image from a label map (``synthesis``), runs the network, and applies the loss
chosen by name from the registry. Every ``checkpoint_every`` steps the whole state (model, optimiser, step,
random generators) is written atomically to ``<run>/last.pt``; ``resume=True`` continues exactly from it. A
run can also start from weights alone (``init_weights``: a ``.safetensors`` model file), which is how a run
restarts when only the committed compact weights survived. SIGTERM/SIGINT finish the current step, write a
checkpoint and return. A NaN/Inf loss stops the run without writing: the last checkpoint stays good.
``labelled_scans`` mixes real labelled scans into the synthetic brains (``mixed_sampler.py``): how the shipped
model learns FreeSurfer's labelling conventions without losing the synthetic brains' robustness.

Fine-tuning (``finetuning/``) runs this same loop with three hooks: ``generator`` (any object with the
synthetic generator's ``batch(batch_size, rng)``: real pairs instead of synthetic brains), ``validator``
(``network -> dict`` with a ``score``) and ``stop_event`` (a ``threading.Event``: cancel from another thread).
``patience`` stops after that many validations without a better score; ``freeze_encoder`` trains the decoder
and head only (the encoder's batch-norm statistics are frozen too).

Under ``torchrun`` (``WORLD_SIZE`` > 1) the network is wrapped in DistributedDataParallel (NCCL on GPUs, gloo
on CPUs); each rank draws its own samples and rank 0 alone validates and writes.
"""
from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from ..imageio.atomic import atomic_path
from ..labels import load_label_table
from ..losses import get_loss, label_weights_from_frequencies
from ..models.files import load_model, save_model
from ..networks import build_network
from ..synthesis.composite_heads import composite_sources
from ..synthesis.generator import SynthesisSettings, SyntheticBrainGenerator
from .config import TrainingConfig
from .mixed_sampler import StrippedOrSkullOn, SyntheticMixture, mixed_sampler

CHECKPOINT_NAME = "last.pt"
BEST_NAME = "best.safetensors"
LOG_NAME = "log.jsonl"
MAX_SKIPPED_IN_ROW = 3  # updates skipped for non-finite gradients before the run counts as diverged
WEIGHTED_LOSSES = ("wce", "explog")  # losses whose cross-entropy term takes label weights


class TrainingError(RuntimeError):
    pass


def target_frequencies(sources, num_classes: int) -> torch.Tensor:
    """Share of each target structure over the training maps (within their labelled boxes)."""
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for source in sources:
        per_code = torch.bincount(source.codes.flatten().long().cpu(), minlength=len(source.values)).double()
        counts.index_add_(0, source.target_lut.cpu(), per_code[: len(source.values)])
    return counts / counts.sum()


ENCODER_PARTS = ("encoders", "downs")  # module names that make up a network's encoder (wong2018, vnet)


def encoder_modules(network) -> list:
    parts = [getattr(network, name) for name in ENCODER_PARTS if hasattr(network, name)]
    if not parts:
        raise TrainingError(f"{type(network).__name__} has no encoder part to freeze")
    return parts


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


class Trainer:
    def __init__(self, config: TrainingConfig, on_event: Callable[[dict], None] | None = None,
                 generator=None, validator: Callable | None = None, stop_event: threading.Event | None = None):
        self.config = config
        self.on_event = on_event or (lambda event: None)
        self.validator = validator
        self.stop_event = stop_event
        self.rank, self.world = _distributed()
        torch.manual_seed(config.seed * 1000 + self.rank)  # weight init and dropout; resume() restores it
        self.run_dir = Path(config.run_dir)
        if self.rank == 0:
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                probe = self.run_dir / ".write-test"
                probe.write_text("ok")
                probe.unlink()
            except OSError as error:
                raise TrainingError(f"checkpoint folder {self.run_dir} is not writable ({error}); "
                                    "choose another --run-dir") from None
        if self.world > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if config.device.startswith("cuda") else "gloo"
            torch.distributed.init_process_group(backend)
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # one patch shape all run long: let cuDNN pick its fastest kernels
        self.table = load_label_table()
        settings = SynthesisSettings(**{**config.synthesis, "patch_size": tuple(config.patch_size)})
        self.generator = generator or SyntheticBrainGenerator(config.label_maps, settings, device=self.device)
        if config.brain_label_maps and generator is None:
            brain_side = SyntheticBrainGenerator(config.brain_label_maps, settings, device=self.device)
            if config.composite_heads:
                composites = composite_sources(config.brain_label_maps, config.label_maps, config.composite_heads,
                                               device=self.device)
                brain_side = StrippedOrSkullOn(brain_side, SyntheticBrainGenerator(composites, settings,
                                                                                   device=self.device),
                                               config.composite_share)
            self.generator = SyntheticMixture(self.generator, brain_side, config.brain_maps_share)
        self.labelled = []  # real labelled scans mixed into the synthetic brains (mixed_sampler.py)
        if config.labelled_scans and generator is None:
            self.generator, self.labelled = mixed_sampler(self.generator, config.labelled_scans, config.patch_size,
                                                          config.labelled_fraction, soft_labels=config.soft_labels,
                                                          rotation_deg=config.labelled_rotation_deg,
                                                          scaling=config.labelled_scaling)
        self.network = build_network(config.architecture, num_classes=self.table.num_classes).to(self.device)
        if config.input_noise_std is not None:
            if not hasattr(self.network, "noise_std"):
                raise TrainingError(f"architecture {config.architecture!r} has no input-noise layer; "
                                    "leave the input noise std unset")
            self.network.noise_std = config.input_noise_std
        self.frozen = encoder_modules(self.network) if config.freeze_encoder else []
        for part in self.frozen:
            part.requires_grad_(False)
        self.loss_params = dict(config.loss_params)
        if config.loss in WEIGHTED_LOSSES and "label_weights" not in self.loss_params:
            self.loss_params["label_weights"] = label_weights_from_frequencies(
                target_frequencies(self.generator.sources, self.table.num_classes)).tolist()
        self.loss = get_loss(config.loss, **self.loss_params).to(self.device)
        optimiser_class = torch.optim.NAdam if config.optimizer == "nadam" else torch.optim.Adam
        trainable = [p for p in self.network.parameters() if p.requires_grad]
        self.optimizer = optimiser_class(trainable, lr=config.learning_rate)
        self.rng = torch.Generator().manual_seed(config.seed * 1000 + self.rank)
        self.step = 0
        self.best_score = -math.inf
        self.since_best = 0  # validations since the best score (early stopping)
        # An early-stopping rule in place of ``patience`` (fine-tuning): (step, planned steps) -> why to stop, or None
        self.early_stop: Callable[[int, int], str | None] | None = None
        self.elapsed = 0.0
        self.skipped_in_row = 0  # consecutive updates skipped for non-finite gradients
        self._stop_requested = False

    # -- state ---------------------------------------------------------------------------------------
    def _checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME

    def save_checkpoint(self) -> None:
        if self.rank != 0:
            return
        checkpoint = {
            "model": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "best_score": self.best_score,
            "since_best": self.since_best,
            "elapsed": self.elapsed,
            "rng": self.rng.get_state(),
            "torch_rng": torch.get_rng_state(),
            "architecture": self.config.architecture,
            "label_table_version": self.table.version,
            "config": json.dumps(asdict(self.config)),
        }
        with atomic_path(self._checkpoint_path()) as temporary:
            torch.save(checkpoint, temporary)

    def resume(self) -> None:
        path = self._checkpoint_path()
        if not path.is_file():
            raise TrainingError(f"--resume: no checkpoint {path}; start without --resume or use --init-weights")
        # Loaded on the CPU: the RNG states must stay CPU tensors (set_state refuses CUDA ones); the model and
        # optimiser states are copied onto the training device by load_state_dict.
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("architecture") != self.config.architecture:
            raise TrainingError(f"checkpoint {path} is for architecture {state.get('architecture')!r}, "
                                f"not {self.config.architecture!r}")
        if state.get("label_table_version") != self.table.version:
            raise TrainingError(f"checkpoint {path} was made with label table {state.get('label_table_version')}, "
                                f"this installation has {self.table.version}")
        self.network.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # a resumed run may lower the learning rate (--lr)
            group["lr"] = self.config.learning_rate
        self.step, self.best_score, self.elapsed = state["step"], state["best_score"], state["elapsed"]
        self.since_best = state.get("since_best", 0)
        self.rng.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])

    def load_initial_weights(self, path: str) -> None:
        network, metadata = load_model(path, device=str(self.device))
        if metadata.get("architecture") != self.config.architecture:
            raise TrainingError(f"{path} holds a {metadata.get('architecture')!r} model, not {self.config.architecture!r}")
        self.network.load_state_dict(network.state_dict())

    def replan(self, steps: int, validate_every: int, patience_after: int = 0,
               checkpoint_every: int | None = None) -> None:
        """Change the run's length while it runs (fine-tuning plans its steps to a time budget after timing the
        first ones); the learning-rate schedule follows the new length from the next step on."""
        if steps < max(1, self.step) or validate_every < 1:
            raise ValueError(f"cannot replan to {steps} steps (validate every {validate_every}) at step {self.step}")
        self.config.steps, self.config.validate_every = steps, validate_every
        self.config.patience_after = patience_after
        if checkpoint_every:
            self.config.checkpoint_every = checkpoint_every

    # -- loop ----------------------------------------------------------------------------------------
    def _request_stop(self, signum, frame) -> None:
        self._stop_requested = True

    def _should_stop(self) -> bool:
        return self._stop_requested or (self.stop_event is not None and self.stop_event.is_set())

    def _train_mode(self, model) -> None:
        model.train()
        for part in self.frozen:  # frozen layers keep their batch-norm running statistics
            part.eval()
        if self.config.freeze_batchnorm:
            for module in model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def _model_metadata(self, validation: dict | None) -> dict:
        from ..losses import loss_parameters

        effective = {**loss_parameters(self.config.loss), **self.loss_params}  # defaults recorded explicitly
        loss_params = {k: v for k, v in effective.items() if k not in ("label_weights", "label_frequencies")}
        return {
            "loss": {"name": self.config.loss, "params": loss_params,
                     "label_weights": self.loss_params.get("label_weights")},
            "steps": self.step,
            "optimizer": self.config.optimizer,
            "learning_rate": self.config.learning_rate,
            "lr_schedule": self.config.lr_schedule,
            "warmup_steps": self.config.warmup_steps,
            "input_noise_std": getattr(self.network, "noise_std", None),
            "patch_size": list(self.config.patch_size),
            "training_data": [Path(p).name for p in self.config.label_maps],
            **({"brain_label_maps": [Path(p).name for p in self.config.brain_label_maps],
                "brain_maps_share": self.config.brain_maps_share} if self.config.brain_label_maps else {}),
            **({"composite_heads": self.config.composite_heads, "composite_share": self.config.composite_share}
               if self.config.composite_heads else {}),
            **({"labelled_scans": [pair.fingerprint() for pair in self.labelled],
                "labelled_fraction": self.config.labelled_fraction,
                "soft_labels": self.config.soft_labels,
                **({"labelled_rotation_deg": self.config.labelled_rotation_deg,
                    "labelled_scaling": self.config.labelled_scaling}
                   if self.config.labelled_rotation_deg or self.config.labelled_scaling else {})}
               if self.labelled else {}),
            "freeze_batchnorm": self.config.freeze_batchnorm,
            "synthesis": self.config.synthesis,
            "wall_time_s": round(self.elapsed, 1),
            "device": str(self.device),
            "validation": validation or {},
        }

    def _diverged(self, what: str) -> str:
        self.on_event({"event": "error", "kind": "diverged", "step": self.step + 1,
                       "message": f"{what} at step {self.step + 1}; stopped without saving, the last checkpoint "
                                  f"({self._checkpoint_path()}) is kept. Lower the learning rate or check the data."})
        return "diverged"

    def run(self) -> dict:
        from .validation import validate

        config = self.config
        model = self.network
        if self.world > 1:
            model = torch.nn.parallel.DistributedDataParallel(model)
        # Signal handlers can only be installed from the main thread; a run in a worker thread (the Slicer
        # module, a fine-tune with a cancel button) is stopped through stop_event instead.
        in_main = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.signal(sig, self._request_stop) for sig in (signal.SIGTERM, signal.SIGINT)} \
            if in_main else {}
        log = open(self.run_dir / LOG_NAME, "a") if self.rank == 0 else None
        status = "finished"
        try:
            while self.step < config.steps:
                started = time.perf_counter()
                self._train_mode(model)
                images, targets = self.generator.batch(config.batch_size, self.rng)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
                    logits = model(images.to(self.device))
                loss = self.loss(logits.float(), targets.to(self.device))
                if not torch.isfinite(loss):
                    status = self._diverged(f"loss became {loss.item()}")
                    break
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                # A finite loss can still give NaN/inf gradients (seen with bf16 autocast on CPUs, 32^3 patches,
                # in the 2x2x2 bottleneck); one such update turns every weight into NaN. Like AMP's gradient
                # scaler, skip that update; a run whose updates keep failing has diverged.
                skipped = not torch.isfinite(torch.nn.utils.clip_grad_norm_(self.network.parameters(), math.inf))
                self.skipped_in_row = self.skipped_in_row + 1 if skipped else 0
                if self.skipped_in_row > MAX_SKIPPED_IN_ROW:
                    status = self._diverged(f"the gradients were NaN or infinite {self.skipped_in_row} steps in a row")
                    break
                if not skipped:
                    for group in self.optimizer.param_groups:
                        group["lr"] = config.learning_rate_at(self.step)
                    self.optimizer.step()
                self.step += 1
                self.elapsed += time.perf_counter() - started
                record = {"step": self.step, "loss": round(loss.item(), 5), "elapsed_s": round(self.elapsed, 1)}
                if skipped:
                    record["skipped"] = "gradients not finite"
                self.on_event({"event": "step", **record, "total": config.steps})
                if self.step % config.validate_every == 0 or self.step == config.steps:
                    if self.rank == 0:
                        record["validation"] = self.validator(self.network) if self.validator else \
                            validate(self.network, self.table, config, self.device, self.generator)
                        self.on_event({"event": "validation", "step": self.step, **record["validation"]})
                        self._keep_if_best(record["validation"])
                if log is not None:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    if "validation" in record:
                        self._plot()
                if self.step % config.checkpoint_every == 0 or self.step == config.steps:
                    self.save_checkpoint()
                if self._should_stop():
                    self.save_checkpoint()
                    status = "stopped"
                    self.on_event({"event": "log", "kind": "stopped",
                                   "message": f"stopped at step {self.step}; checkpoint written, continue with --resume"})
                    break
                reason = self.early_stop(self.step, config.steps) if self.early_stop and "validation" in record \
                    and self.step < config.steps else None
                if reason:
                    self.save_checkpoint()
                    status = "early_stopped"
                    self.on_event({"event": "log", "kind": "early_stopped",
                                   "message": f"stopped early at step {self.step}: {reason}"})
                    break
                if config.patience and config.patience_after <= self.step < config.steps and self.since_best >= config.patience:
                    self.save_checkpoint()
                    status = "early_stopped"
                    self.on_event({"event": "log", "kind": "early_stopped",
                                   "message": f"no better validation score in {self.since_best} validations: "
                                              f"stopped early at step {self.step}"})
                    break
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if log is not None:
                log.close()
        return {"status": status, "step": self.step, "best_score": self.best_score}

    def _plot(self) -> None:
        try:
            from .plots import plot_curves
        except ImportError:  # matplotlib is optional
            return
        try:
            plot_curves(self.run_dir / LOG_NAME, self.run_dir / "curves.png",
                        f"{self.config.architecture}, loss {self.config.loss}, patch {self.config.patch_size}")
        except ImportError:
            return

    def _keep_if_best(self, validation: dict) -> None:
        score = validation.get("score", -math.inf)
        self.since_best += 1
        if score > self.best_score:
            self.best_score = score
            self.since_best = 0
            save_model(self.network, self.run_dir / BEST_NAME, self._model_metadata(validation), overwrite=True)
        save_model(self.network, self.run_dir / "latest.safetensors", self._model_metadata(validation),
                   overwrite=True)


def train(config: TrainingConfig, resume: bool = False, on_event: Callable[[dict], None] | None = None) -> dict:
    trainer = Trainer(config, on_event)
    if resume:
        trainer.resume()
    elif config.init_weights:
        trainer.load_initial_weights(config.init_weights)
    return trainer.run()

