"""``seglossbrain finetune --stop-file``: the graceful stop that works on every OS (Windows has no SIGTERM to
catch). The watcher thread alone, then a real run stopped by the file after its first validation, which keeps
exactly the weights that were validated. Same phantoms, random base model and 32^3 patches on one thread as
test_finetune.py."""
import json
import threading
import time

import torch

from SegLossBrainLib.cli import main
from SegLossBrainLib.cli.finetune import watch_stop_file
from SegLossBrainLib.finetuning import validator as finetune_validator
from SegLossBrainLib.models.files import load_model
from test_finetune import one_thread, pairs, store  # noqa: F401 (fixtures)


def wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_watcher_sets_cancel_once_the_file_exists_and_ends_when_done(tmp_path):
    stop = tmp_path / "stop"
    cancel, done = threading.Event(), threading.Event()
    thread = watch_stop_file(str(stop), cancel, done, interval=0.02)
    time.sleep(0.1)
    assert not cancel.is_set() and thread.is_alive() and thread.daemon
    stop.touch()
    wait_for(cancel.is_set)
    thread.join(timeout=2)
    assert not thread.is_alive()
    # A run that ends by itself stops its watcher without cancelling anything.
    cancel, done = threading.Event(), threading.Event()
    thread = watch_stop_file(str(tmp_path / "never"), cancel, done, interval=0.02)
    done.set()
    thread.join(timeout=2)
    assert not thread.is_alive() and not cancel.is_set()


def test_stop_file_after_the_first_validation_keeps_the_validated_weights(store, pairs, random_model_file, capsys,
                                                                          monkeypatch, tmp_path):
    stop = tmp_path / "stop-request"
    validated = {}  # step -> the weights the validation saw
    original = finetune_validator.Validator.__call__

    def validate_then_ask_to_stop(self, network):
        result = original(self, network)
        if self.trainer.step > 0:
            validated[self.trainer.step] = {k: v.detach().clone() for k, v in network.state_dict().items()}
            stop.touch()  # what the Slicer module does on "Stop": the run must now end after its current step
        return result

    monkeypatch.setattr(finetune_validator.Validator, "__call__", validate_then_ask_to_stop)
    pair_args = [f"{i},{l}" for i, l in pairs]
    code = main(["finetune", "--pairs", pair_args[0], "--validation", pair_args[1], "--base", str(random_model_file),
                 "--name", "stopped-v1", "--steps", "200", "--validate-every", "1", "--patience", "0",
                 "--patch-size", "32", "--device", "cpu", "--threads", "1", "--stop-file", str(stop),
                 "--progress-json"])
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    result = events[-1]
    assert code == 0 and result["event"] == "result" and result["status"] == "cancelled"
    assert 1 <= result["steps_run"] < 200 and result["best_step"] in validated
    assert any(e.get("kind") == "stopped" and "keeping the last validated weights" in e["message"] for e in events)
    path = store / "stopped-v1.safetensors"
    assert result["path"] == str(path) and path.is_file()
    saved, meta = load_model(path)
    assert meta["finetune"]["status"] == "cancelled" and meta["steps"] == result["best_step"]
    expected = validated[result["best_step"]]
    for name, value in saved.state_dict().items():
        want = expected[name].to(torch.float16).to(value.dtype) if value.is_floating_point() else expected[name]
        assert torch.equal(value, want), name  # weights stored as float16
    assert stop.exists()  # the engine only looks: the caller owns (and removes) the file


def test_stop_file_present_from_the_start_writes_nothing(store, pairs, random_model_file, capsys, tmp_path):
    stop = tmp_path / "stop-request"
    stop.touch()
    pair_args = [f"{i},{l}" for i, l in pairs]
    code = main(["finetune", "--pairs", pair_args[0], "--pairs", pair_args[1], "--base", str(random_model_file),
                 "--name", "never-v1", "--steps", "50", "--patch-size", "32", "--device", "cpu", "--threads", "1",
                 "--stop-file", str(stop), "--progress-json"])
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert code == 1 and result["status"] == "cancelled" and result["path"] is None and result["steps_run"] == 0
    assert not (store / "never-v1.safetensors").exists()
