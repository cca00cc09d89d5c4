"""The training loop: exact resume, stop on signal, NaN rollback, bad folders, start from weights alone,
and DistributedDataParallel with two CPU processes (gloo)."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SegLossBrainLib.models.files import load_model, save_model
from SegLossBrainLib.networks import build_network
from SegLossBrainLib.training.trainer import Trainer, TrainingConfig, TrainingError, train


@pytest.fixture(scope="module")
def label_maps(tmp_path_factory):
    """Two 48^3 1 mm label maps: nested spheres of WM, cortex, ventricle, hippocampus, CSF and scalp."""
    folder = tmp_path_factory.mktemp("maps")
    paths = []
    for index, shift in enumerate((0, 3)):
        k, j, i = np.meshgrid(*[np.arange(48)] * 3, indexing="ij")
        r = np.sqrt((k - 24 - shift) ** 2 + (j - 24) ** 2 + (i - 24) ** 2)
        labels = np.select([r < 5, r < 10, r < 15, r < 18, r < 21, r < 23],
                           [4, 2, 3, 24, 500 + 0 * r, 17], 0).astype(np.int16)
        labels[(r < 10) & (i > 28)] = 17
        image = sitk.GetImageFromArray(labels)
        path = folder / f"map_{index}.nii.gz"
        sitk.WriteImage(image, str(path))
        paths.append(str(path))
    return paths


def config(label_maps, run_dir, **overrides):
    values = dict(label_maps=label_maps[:1], validation_maps=label_maps[1:], run_dir=str(run_dir),
                  patch_size=(32, 32, 32), validation_size=(32, 32, 32), steps=4, checkpoint_every=2,
                  validate_every=2, seed=3, loss="explog")
    values.update(overrides)
    return TrainingConfig(**values)


def weights(network):
    return {k: v.clone() for k, v in network.state_dict().items()}


def test_resume_continues_exactly(tmp_path, label_maps):
    straight = Trainer(config(label_maps, tmp_path / "a"))
    straight.run()
    first = Trainer(config(label_maps, tmp_path / "b", steps=2))
    first.run()
    resumed = Trainer(config(label_maps, tmp_path / "b"))
    resumed.resume()
    assert resumed.step == 2
    resumed.run()
    for name, value in weights(straight.network).items():
        assert torch.equal(value, resumed.network.state_dict()[name]), name
    log = [json.loads(line) for line in open(tmp_path / "b" / "log.jsonl")]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and "validation" in log[1]
    assert (tmp_path / "b" / "best.safetensors").is_file()


def test_signal_writes_a_checkpoint_and_stops(tmp_path, label_maps):
    def on_event(event):
        if event.get("event") == "step" and event["step"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    result = train(config(label_maps, tmp_path, steps=50, checkpoint_every=50, validate_every=50), on_event=on_event)
    assert result == {"status": "stopped", "step": 1, "best_score": -float("inf")}
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["step"] == 1
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, label_maps):
    trainer = Trainer(config(label_maps, tmp_path, steps=10, validate_every=100))
    calls = {"n": 0}
    real_loss = trainer.loss

    def poisoned(logits, target):
        calls["n"] += 1
        value = real_loss(logits, target)
        return value * float("nan") if calls["n"] == 3 else value

    trainer.loss = poisoned
    events = []
    trainer.on_event = events.append
    result = trainer.run()
    assert result["status"] == "diverged" and result["step"] == 2
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 2
    assert any("nan" in e.get("message", "").lower() for e in events)


def _gradient_poison(trainer, poisoned_calls):
    """Make the loss's value unchanged but its gradient NaN on the given calls (sqrt at 0: 0 * inf = NaN)."""
    calls = {"n": 0}
    real_loss = trainer.loss

    def poisoned(logits, target):
        calls["n"] += 1
        value = real_loss(logits, target)
        return value + torch.sqrt(logits.sum() * 0.0) if calls["n"] in poisoned_calls else value

    trainer.loss = poisoned


def test_an_update_with_nan_gradients_is_skipped(tmp_path, label_maps):
    trainer = Trainer(config(label_maps, tmp_path, steps=4, validate_every=100))
    _gradient_poison(trainer, {3})
    before = {}
    trainer.on_event = lambda e: before.update(weights(trainer.network)) if e.get("step") == 2 and \
        e.get("event") == "step" else None
    original_step = trainer.optimizer.step
    updates = []
    trainer.optimizer.step = lambda *a, **k: (updates.append(trainer.step + 1), original_step(*a, **k))
    result = trainer.run()
    assert result["status"] == "finished" and result["step"] == 4
    assert updates == [1, 2, 4]  # step 3's update was skipped
    log = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert [r.get("skipped") for r in log] == [None, None, "gradients not finite", None]
    assert all(torch.isfinite(v).all() for v in trainer.network.state_dict().values() if v.is_floating_point())


def test_updates_that_keep_failing_end_the_run_as_diverged(tmp_path, label_maps):
    trainer = Trainer(config(label_maps, tmp_path, steps=10, validate_every=100, checkpoint_every=1))
    _gradient_poison(trainer, {3, 4, 5, 6})
    events = []
    trainer.on_event = events.append
    result = trainer.run()
    assert result["status"] == "diverged" and result["step"] == 5  # 3 skipped updates tolerated, the 4th stops
    assert any("nan or infinite 4 steps in a row" in e.get("message", "").lower() for e in events)
    assert all(torch.isfinite(v).all() for v in trainer.network.state_dict().values() if v.is_floating_point())


def test_unwritable_run_dir_and_wrong_checkpoint(tmp_path, label_maps):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(TrainingError, match="not writable"):
        Trainer(config(label_maps, blocker / "run"))
    Trainer(config(label_maps, tmp_path / "r", steps=2)).run()
    with pytest.raises(TrainingError, match="architecture 'wong2018'"):
        other = Trainer(config(label_maps, tmp_path / "r", architecture="vnet"))
        other.resume()
    with pytest.raises(TrainingError, match="no checkpoint"):
        Trainer(config(label_maps, tmp_path / "empty")).resume()


def test_start_from_weights_alone(tmp_path, label_maps):
    torch.manual_seed(7)
    source = save_model(build_network("wong2018"), tmp_path / "init.safetensors", {"loss": {"name": "explog"}})
    trainer = Trainer(config(label_maps, tmp_path / "run"))
    trainer.load_initial_weights(str(source))
    expected, _ = load_model(source)
    for name, value in expected.state_dict().items():
        assert torch.equal(trainer.network.state_dict()[name], value), name


@pytest.mark.slow
def test_two_process_data_parallel_on_cpu(tmp_path, label_maps):
    folder = os.path.dirname(label_maps[0])
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               "-m", "SegLossBrainLib.cli", "train", "--label-maps", folder, "--validation-maps", "map_1.nii.gz",
               "--run-dir", str(tmp_path / "ddp"), "--patch-size", "32", "--steps", "3", "--checkpoint-every", "3",
               "--validate-every", "3", "--threads", "1", "--device", "cpu"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    state = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    assert state["step"] == 3
    assert not any(k.startswith("module.") for k in state["model"])  # saved unwrapped


def test_frozen_batchnorm_keeps_running_statistics(tmp_path, label_maps):
    trainer = Trainer(config(label_maps, tmp_path, steps=2, validate_every=100, freeze_batchnorm=True))
    before = {k: v.clone() for k, v in trainer.network.state_dict().items() if "running" in k}
    weights_before = trainer.network.encoders[0].main[0].weight.clone()
    trainer.run()
    after = trainer.network.state_dict()
    assert all(torch.equal(value, after[name]) for name, value in before.items())
    assert not torch.equal(weights_before, trainer.network.encoders[0].main[0].weight)  # weights still train


def test_learning_rate_schedules_match_hand_computed_values(label_maps, tmp_path):
    poly = config(label_maps, tmp_path, steps=10, learning_rate=1e-3, lr_schedule="poly")
    assert poly.learning_rate_at(0) == pytest.approx(1e-3)
    assert poly.learning_rate_at(5) == pytest.approx(1e-3 * 0.5 ** 0.9)
    assert poly.learning_rate_at(9) == pytest.approx(1e-3 * 0.1 ** 0.9)  # the last step still moves
    ramp = config(label_maps, tmp_path, steps=10, learning_rate=1e-3, warmup_steps=4)
    assert [ramp.learning_rate_at(s) for s in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    for bad in (dict(lr_schedule="cosine"), dict(warmup_steps=-1), dict(input_noise_std=float("nan"))):
        with pytest.raises(ValueError):
            config(label_maps, tmp_path, **bad)


def test_the_optimiser_steps_with_the_scheduled_rate(label_maps, tmp_path):
    trainer = Trainer(config(label_maps, tmp_path, steps=4, learning_rate=1e-3, lr_schedule="poly", warmup_steps=2))
    seen = []
    original = trainer.optimizer.step
    trainer.optimizer.step = lambda *a, **k: (seen.append(trainer.optimizer.param_groups[0]["lr"]), original(*a, **k))
    trainer.run()
    expected = [1e-3 * (1 - s / 4) ** 0.9 * min(1.0, (s + 1) / 2) for s in range(4)]
    assert seen == pytest.approx(expected)


def test_input_noise_setting_reaches_the_network_and_the_model_file(label_maps, tmp_path):
    trainer = Trainer(config(label_maps, tmp_path, steps=2, input_noise_std=0.0))
    assert trainer.network.noise_std == 0.0
    patch = torch.rand(1, 1, 32, 32, 32)
    captured = []
    handle = trainer.network.encoders[0].register_forward_pre_hook(lambda module, args: captured.append(args[0].detach().clone()))
    trainer.network.train()
    trainer.network(patch)
    handle.remove()
    assert torch.equal(captured[0], patch)  # no noise added in train mode
    trainer.run()
    _, metadata = load_model(tmp_path / "best.safetensors")
    assert metadata["input_noise_std"] == 0.0
    default = Trainer(config(label_maps, tmp_path / "d", steps=2))
    assert default.network.noise_std == 1.0  # the paper's noise unless asked otherwise
    with pytest.raises(TrainingError, match="no input-noise layer"):
        Trainer(config(label_maps, tmp_path / "v", architecture="vnet", input_noise_std=0.0))


def test_early_stopping_waits_for_patience_after_and_replan_moves_the_end(label_maps, tmp_path):
    scores = iter([0.5, 0.4, 0.3, 0.2, 0.1, 0.0, -0.1, -0.2])  # never better after the first validation

    trainer = Trainer(config(label_maps, tmp_path / "run", steps=8, validate_every=1, patience=1, patience_after=5),
                      validator=lambda network: {"score": next(scores)})
    outcome = trainer.run()
    # worse from step 2 on: patience 1 would stop at step 2, but not before step 5
    assert outcome["status"] == "early_stopped" and outcome["step"] == 5

    trainer = Trainer(config(label_maps, tmp_path / "run2", steps=8, validate_every=4, lr_schedule="poly",
                             learning_rate=1e-3))
    rates = []
    trainer.on_event = lambda event: rates.append(trainer.optimizer.param_groups[0]["lr"]) \
        if event["event"] == "step" else None
    trainer.replan(4, 2)  # before the loop: as if the time budget allowed only 4 steps
    assert trainer.run()["step"] == 4
    expected = [1e-3 * (1 - step / 4) ** 0.9 for step in range(4)]  # poly over the 4 planned steps, not 8
    assert rates == pytest.approx(expected) and trainer.config.steps == 4
    with pytest.raises(ValueError):
        trainer.replan(3, 1)  # shorter than the steps already run
