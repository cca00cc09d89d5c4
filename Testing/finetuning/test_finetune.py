"""Fine-tuning on user pairs: a versioned model with its metadata, the base untouched, label conventions,
grids, refusals, cancel, NaN rollback, the lock, an unwritable or full store, and the CLI.

Pairs are 48^3 phantoms at 1.5 mm (nested spheres: ventricle, thalamus, white matter, cortex); the base is
a randomly initialised model file. Runs are a few 32^3 steps on one thread."""
import errno
import json
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SegLossBrainLib.cli import main
from SegLossBrainLib.finetuning import unfinished
from SegLossBrainLib.finetuning.finetune import FinetuneConfig, FinetuneError, continue_finetune, finetune
from SegLossBrainLib.training.labelled_scans import load_pair
from SegLossBrainLib.imageio.volumes import InputError
from SegLossBrainLib.labels import LabelError
from SegLossBrainLib.models import files as models, lock as store_lock, store as model_store
from SegLossBrainLib.models.files import load_model, sha256_of
from SegLossBrainLib.training import trainer as training

INDEX_TO_ASEG = {3: (4, 43), 7: (10, 49), 1: (2, 41), 2: (3, 42)}  # (left, right)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A temporary user store and Resources without shipped models."""
    resources = tmp_path / "Resources"
    (resources / "Models").mkdir(parents=True)
    shutil.copy(models.load_label_table().path, resources / "SegLossBrainLabels.csv")
    monkeypatch.setenv("SEGLOSSBRAIN_RESOURCES", str(resources))
    monkeypatch.setenv("SEGLOSSBRAIN_MODEL_STORE", str(tmp_path / "store"))
    return tmp_path / "store"


def phantom_arrays(shift=0, size=48):
    k, j, i = np.meshgrid(*[np.arange(size)] * 3, indexing="ij")
    r = np.sqrt((k - 24 - shift) ** 2 + (j - 24) ** 2 + (i - 24) ** 2)
    labels = np.select([r < 4, r < 9, r < 14, r < 18], [3, 7, 1, 2], 0).astype(np.uint8)
    lut = np.zeros(20)
    lut[[3, 7, 1, 2]] = [200, 600, 900, 500]
    image = lut[labels] + 50 * (r < 21) + np.random.default_rng(shift).normal(0, 10, labels.shape)
    return image.astype(np.float32), labels


def write(array, path, spacing=(1.5, 1.5, 1.5), origin=(0.0, 0.0, 0.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))
    return str(path)


def make_pair(folder, name, shift=0, labels=None, **geometry):
    image, index_labels = phantom_arrays(shift)
    labels = index_labels if labels is None else labels
    return (write(image, folder / f"{name}_t1.nii.gz"), write(labels, folder / f"{name}_labels.nii.gz", **geometry))


@pytest.fixture
def pairs(tmp_path):
    folder = tmp_path / "cases"
    folder.mkdir()
    return [make_pair(folder, "a", 0), make_pair(folder, "b", 2)]


def config(pairs, base, **overrides):
    # The base is a random network: lr 3e-5 in fp32 (the defaults, 1e-4 in bf16, can make it diverge within 20
    # steps), and no early stopping (its Dice stays near 0), unless a test asks for them
    values = dict(pairs=pairs, name="site-v1", base=str(base), steps=3, validate_every=2, patch_size=(32, 32, 32),
                  device="cpu", learning_rate=3e-5, precision="fp32", patience=0)
    values.update(overrides)
    return FinetuneConfig(**values)


def store_files(store):
    return sorted(p.name for p in store.iterdir()) if store.exists() else []


def test_finetune_writes_a_version_with_metadata_and_leaves_the_base_alone(store, pairs, random_model_file):
    base_bytes = random_model_file.read_bytes()
    events = []
    result = finetune(config(pairs, random_model_file, loss_params={"gamma": 0.3, "w_dice": 0.8, "w_cross": 0.2}),
                      on_event=events.append)
    assert result.status == "finished" and result.path == store / "site-v1.safetensors"
    assert store_files(store) == ["site-v1.json", "site-v1.safetensors"]  # no lock, no temporary files
    assert random_model_file.read_bytes() == base_bytes
    meta = json.loads((store / "site-v1.json").read_text())
    assert meta["base"] == {"name": random_model_file.stem, "sha256": sha256_of(random_model_file), "source": "user"}
    assert meta["loss"]["name"] == "explog"
    assert meta["loss"]["params"] == {"gamma_dice": 0.3, "gamma_cross": 0.3, "w_dice": 0.8, "w_cross": 0.2}
    assert len(meta["loss"]["label_weights"]) == 20 and meta["loss"]["label_weights_from"] == "training labels"
    assert meta["steps"] == result.best_step and meta["finetune"]["steps_run"] == 3
    assert [c["image_sha256"] for c in meta["training_cases"]] == [sha256_of(pairs[0][0])]
    assert meta["training_cases"][0]["labels_sha256"] == sha256_of(pairs[0][1])
    assert meta["validation"]["mode"] == "last pair held out"
    assert meta["validation"]["cases"][0]["image_sha256"] == sha256_of(pairs[1][0])
    for when in ("before", "after"):
        dice = meta["validation"][when]["dice"]
        assert set(dice) == set(models.load_label_table().names[1:]) and dice["thalamus"] is not None
    tuned, _ = load_model(result.path)
    base, _ = load_model(random_model_file)
    assert any(not torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), base.state_dict().values()))
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3] and all("eta_s" in e and "loss" in e for e in steps)
    validations = [e for e in events if e["event"] == "validation"]
    assert [e["step"] for e in validations] == [0, 2, 3] and "thalamus" in validations[0]["dice"]
    assert events[-1]["event"] == "result" and events[-1]["path"] == str(result.path)
    assert [v.name for v in model_store.list_versions()] == ["site-v1"]


def test_frozen_encoder_keeps_encoder_weights(store, pairs, random_model_file):
    result = finetune(config(pairs, random_model_file, freeze_encoder=True, loss="gdl", steps=2))
    tuned, meta = load_model(result.path)
    base, _ = load_model(random_model_file)
    for name, value in base.state_dict().items():
        if name.startswith("encoders."):
            assert torch.equal(value, tuned.state_dict()[name]), name  # running statistics included
    assert meta["finetune"]["freeze_encoder"] and meta["loss"]["label_weights"] is None


@pytest.mark.parametrize("input_noise", [False, True])
def test_input_noise_is_off_unless_asked(store, pairs, random_model_file, monkeypatch, input_noise):
    """The network sees exactly the sampled patch while fine-tuning (default), or that patch plus noise of the
    patch's own standard deviation with ``input_noise`` (the network's training-from-scratch regulariser)."""
    from SegLossBrainLib.training import labelled_scans as finetune_data

    sampled, seen = [], []
    original_batch, original_run = finetune_data.PairSampler.batch, training.Trainer.run

    def batch(self, batch_size, rng):
        images, targets = original_batch(self, batch_size, rng)
        sampled.append(images.clone())
        return images, targets

    def run(self):
        self.network.encoders[0].register_forward_pre_hook(
            lambda module, args: seen.append(args[0].detach().clone()) if module.training else None)
        return original_run(self)

    monkeypatch.setattr(finetune_data.PairSampler, "batch", batch)
    monkeypatch.setattr(training.Trainer, "run", run)
    result = finetune(config(pairs, random_model_file, steps=2, input_noise=input_noise))
    assert len(sampled) == len(seen) == 2
    for image, network_input in zip(sampled, seen):
        difference = (network_input - image).std() / image.std()
        assert (difference > 0.5) if input_noise else (difference == 0), float(difference)
    assert json.loads(result.path.with_suffix(".json").read_text())["finetune"]["input_noise"] is input_noise


def test_aseg_labels_are_detected_and_mapped(tmp_path):
    _, index_labels = phantom_arrays()
    aseg = np.zeros(index_labels.shape, np.int16)
    right = np.arange(48)[None, None, :] >= 24  # aseg has separate left and right values; both merge
    for index, (left_value, right_value) in INDEX_TO_ASEG.items():
        aseg[(index_labels == index) & ~right] = left_value
        aseg[(index_labels == index) & right] = right_value
    image_path, aseg_path = make_pair(tmp_path, "aseg", labels=aseg)
    _, index_path = make_pair(tmp_path, "index")
    logs = []
    from_aseg, from_index = load_pair(image_path, aseg_path, log=logs.append), load_pair(image_path, index_path)
    assert from_aseg.convention == "freesurfer" and from_index.convention == "index"
    assert torch.equal(from_aseg.labels, from_index.labels) and from_aseg.structures == [1, 2, 3, 7]
    assert any("FreeSurfer aseg" in message for message in logs)


def test_labels_on_another_grid_are_refused_unless_resampled(tmp_path):
    image_path, labels_path = make_pair(tmp_path, "shifted", origin=(3.0, 0.0, 0.0))
    with pytest.raises(InputError, match=r"not on the grid of image .*\(origin \(3.0, 0.0, 0.0\) vs \(0.0, 0.0, 0.0\)\).*--resample-labels"):
        load_pair(image_path, labels_path)
    logs = []
    pair = load_pair(image_path, labels_path, resample_labels=True, log=logs.append)
    assert pair.structures == [1, 2, 3, 7] and any("nearest" in message for message in logs)


@pytest.mark.parametrize("labels,message", [
    (np.zeros((48, 48, 48), np.uint8), "empty"),
    (np.where(phantom_arrays()[1] > 0, 7, 0).astype(np.uint8), "single structure \\(thalamus\\)"),
    (np.full((48, 48, 48), 2, np.uint8), "single structure"),
])
def test_empty_or_single_label_segmentations_are_refused(tmp_path, labels, message):
    with pytest.raises(LabelError, match=message):
        load_pair(*make_pair(tmp_path, "bad", labels=labels))


def test_labels_outside_both_conventions_are_listed(tmp_path):
    labels = phantom_arrays()[1].astype(np.int16)
    labels[:2] = 1000
    labels[-2:] = 1001
    with pytest.raises(LabelError, match="values 1000, 1001 fit neither"):
        load_pair(*make_pair(tmp_path, "odd", labels=labels))
    labels[:2], labels[-2:] = 41, 0  # an aseg value (right white matter) among structure indices
    with pytest.raises(LabelError, match="mixes conventions: values 1 exist only in the 19-structure order, values 41 only"):
        load_pair(*make_pair(tmp_path, "mixed", labels=labels))


def test_bad_configuration_is_refused_before_work(store, pairs, random_model_file):
    with pytest.raises(FinetuneError, match="multiple of 16"):
        finetune(config(pairs, random_model_file, patch_size=(30, 32, 32)))
    with pytest.raises(ValueError, match="unknown parameter"):
        finetune(config(pairs, random_model_file, loss_params={"gama": 0.3}))
    with pytest.raises(model_store.StoreError, match="model name"):
        finetune(config(pairs, random_model_file, name="../evil"))
    with pytest.raises(FinetuneError, match="no model to start from"):
        no_base = config(pairs, random_model_file)
        no_base.base = None  # the active model, and none is installed or active
        finetune(no_base)
    with pytest.raises(FinetuneError, match="also a training case"):
        finetune(config(pairs, random_model_file, validation=pairs[0]))
    assert not list(store.glob("*.safetensors"))


def test_cancel_before_any_validation_writes_no_version_but_can_be_continued(store, pairs, random_model_file):
    cancel = threading.Event()

    def on_event(event):
        if event["event"] == "step":
            cancel.set()

    result = finetune(config(pairs, random_model_file, steps=20, validate_every=10), on_event=on_event, cancel=cancel)
    assert result.status == "cancelled" and result.path is None and result.steps_run == 1
    assert store_files(store) == [".unfinished"]  # no version; the working folder, to continue from step 1
    assert [run.name for run in unfinished.list_runs()] == ["site-v1"] and unfinished.find("site-v1").step == 1
    with pytest.raises(FinetuneError, match="unfinished fine-tune named 'site-v1' exists"):
        finetune(config(pairs, random_model_file))
    events = []
    continued = continue_finetune("site-v1", on_event=events.append)
    assert continued.status == "finished" and continued.steps_run == 20 and continued.name == "site-v1"
    assert any("continuing from step 1 of 20" in e.get("message", "") for e in events)
    assert store_files(store) == ["site-v1.json", "site-v1.safetensors"]  # the working folder is gone


def test_cancel_after_a_validation_keeps_that_state(store, pairs, random_model_file):
    cancel = threading.Event()

    def on_event(event):
        if event["event"] == "step" and event["step"] == 2:
            cancel.set()

    result = finetune(config(pairs, random_model_file, steps=20, validate_every=1), on_event=on_event, cancel=cancel)
    assert result.status == "cancelled" and result.steps_run == 2 and result.best_step in (1, 2)
    _, meta = load_model(result.path)
    assert meta["finetune"]["status"] == "cancelled"
    assert store_files(store) == [".unfinished", "site-v1.json", "site-v1.safetensors"]
    # the stopped version exists and never changes: continuing saves under a new name
    stopped_sha = sha256_of(result.path)
    continued = continue_finetune("site-v1")
    assert continued.name == "site-v1-continued" and continued.steps_run == 20
    assert load_model(continued.path)[1]["finetune"]["continued"] is True
    assert sha256_of(result.path) == stopped_sha and not (store / ".unfinished").exists()


def test_cancel_from_another_thread(store, pairs, random_model_file):
    cancel, outcome = threading.Event(), {}
    worker = threading.Thread(target=lambda: outcome.update(
        result=finetune(config(pairs, random_model_file, steps=200, validate_every=1), cancel=cancel)))
    worker.start()  # signal handlers cannot be installed off the main thread: the event must do it
    while worker.is_alive() and not (store / ".finetune.lock").exists():
        worker.join(0.05)
    cancel.set()
    worker.join(120)
    assert outcome["result"].status == "cancelled" and outcome["result"].steps_run < 200


def test_nan_loss_rolls_back_to_the_last_validated_weights(store, pairs, random_model_file, monkeypatch):
    real_get_loss, calls = training.get_loss, {"n": 0}

    def poisoned_loss(name, **params):
        loss = real_get_loss(name, **params)

        class Poisoned(torch.nn.Module):
            def forward(self, logits, target):
                calls["n"] += 1
                value = loss(logits, target)
                return value * float("nan") if calls["n"] == 3 else value

        return Poisoned()

    monkeypatch.setattr(training, "get_loss", poisoned_loss)
    events = []
    result = finetune(config(pairs, random_model_file, steps=10, validate_every=1), on_event=events.append)
    assert result.status == "diverged" and result.steps_run == 2 and result.best_step in (1, 2)
    network, meta = load_model(result.path)
    assert meta["finetune"]["status"] == "diverged"
    assert all(torch.isfinite(v.float()).all() for v in network.state_dict().values())
    assert any("rolled back" in e.get("message", "") for e in events)


def test_second_finetune_is_refused_while_one_runs(store, pairs, random_model_file):
    with store_lock.finetune_lock("someone-else"):
        with pytest.raises(store_lock.StoreBusyError, match="another fine-tune is running .*someone-else"):
            finetune(config(pairs, random_model_file))
    assert store_files(store) == []


def test_stale_lock_of_a_dead_process_is_taken_over(store):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.mkdir()
    import socket

    (store / ".finetune.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    with store_lock.finetune_lock("mine") as lock:
        assert json.loads(lock.read_text())["model"] == "mine"
    assert not lock.exists()


def test_unwritable_store_is_refused(tmp_path, monkeypatch, pairs, random_model_file):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("SEGLOSSBRAIN_MODEL_STORE", str(blocker / "models"))
    with pytest.raises(model_store.StoreError, match="Nothing was written"):
        finetune(config(pairs, random_model_file))


def test_full_disk_leaves_nothing_half_written(store, monkeypatch, random_model_file):
    real_write = models.write_bytes_atomic

    def full_on_metadata(path, data):
        if str(path).endswith(".json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(models, "write_bytes_atomic", full_on_metadata)
    network, _ = load_model(random_model_file)
    with pytest.raises(model_store.StoreError, match="no space left"):
        model_store.save_version(network, "full", {"loss": {"name": "explog"}})
    assert store_files(store) == []


def test_cli_finetune_progress_json_and_exit_codes(store, pairs, random_model_file, capsys):
    pair_args = [f"{i},{l}" for i, l in pairs]
    code = main(["finetune", "--pairs", pair_args[0], "--pairs", pair_args[1], "--base", str(random_model_file),
                 "--name", "cli-v1", "--loss", "wce", "--steps", "2", "--validate-every", "2", "--patch-size", "32",
                 "--device", "cpu", "--threads", "1", "--progress-json"])
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and (store / "cli-v1.safetensors").is_file()
    assert {"log", "step", "validation", "result"} <= {e["event"] for e in events}
    assert events[-1]["event"] == "result" and events[-1]["status"] == "finished"
    for bad in (["--pairs", pairs[0][0]], ["--pairs", pair_args[0], "--loss", "nope"],
                ["--pairs", pair_args[0], "--name", "cli-v1"], ["--pairs", f"{pairs[0][0]},{store}/missing.nii.gz"]):
        args = ["finetune", "--base", str(random_model_file), "--name", "cli-v2", "--device", "cpu"] + bad
        assert main(args) == 2, bad
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("seglossbrain: error:"), err
    assert store_files(store) == ["cli-v1.json", "cli-v1.safetensors"]


def test_wce_fine_tunes_with_gentler_weights_than_the_base_recorded(store, pairs, tmp_path):
    """The base records its label weights: ExpLog fine-tunes with them as they are, WCE with their fourth root
    (inverse frequency to the power 0.125 instead of Wong et al.'s 0.5)."""
    from SegLossBrainLib.models.files import save_model
    from SegLossBrainLib.networks import build_network

    recorded = [1.0 + 3.0 * i for i in range(20)]  # 1, 4, 7, ..., 58
    base = tmp_path / "weighted.safetensors"
    torch.manual_seed(0)
    save_model(build_network("wong2018"), base, {"loss": {"name": "explog", "label_weights": recorded}})
    for loss, expected, source in (("explog", recorded, "base model"),
                                   ("wce", [w ** 0.25 for w in recorded], "base model, to the power 0.25")):
        result = finetune(config(pairs, base, name=f"w-{loss}", loss=loss, steps=2))
        meta = load_model(result.path)[1]["loss"]
        assert meta["label_weights"] == pytest.approx(expected) and meta["label_weights_from"] == source
