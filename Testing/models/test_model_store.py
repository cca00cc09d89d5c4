"""The user model store: listing with the active version, activate / revert / delete rules, what
default_model_path() follows, names, the fine-tune lock, and the ``models`` sub-commands."""
import json
import os
import shutil
import socket

import pytest

from SegLossBrainLib.cli import main
from SegLossBrainLib.models import files as models, store as model_store
from SegLossBrainLib.models.lock import StoreBusyError, finetune_lock
from SegLossBrainLib.models.store import StoreError


def copy_model(source, folder, name):
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.safetensors"
    shutil.copy(source, target)
    shutil.copy(models.metadata_path(source), models.metadata_path(target))
    return target


@pytest.fixture
def installed(tmp_path, monkeypatch, random_model_file):
    """Resources with one shipped model (a copy of a random model file) and a store with two user versions."""
    resources = tmp_path / "Resources"
    resources.mkdir()
    shutil.copy(models.load_label_table().path, resources / "SegLossBrainLabels.csv")
    monkeypatch.setenv("SEGLOSSBRAIN_RESOURCES", str(resources))
    store = tmp_path / "store"
    monkeypatch.setenv("SEGLOSSBRAIN_MODEL_STORE", str(store))
    shipped = copy_model(random_model_file, resources / "Models", model_store.DEFAULT_MODEL_NAME)
    site_a = copy_model(random_model_file, store, "site-a")
    copy_model(random_model_file, store, "site-b")
    return {"shipped": shipped, "site-a": site_a, "store": store}


def active_names():
    return [v.name for v in model_store.list_versions() if v.active]


def test_listing_marks_the_shipped_default_active_without_a_choice(installed):
    versions = model_store.list_versions()
    assert [(v.name, v.source, v.active) for v in versions] == [
        (model_store.DEFAULT_MODEL_NAME, "shipped", True), ("site-a", "user", False), ("site-b", "user", False)]
    assert versions[1].summary()["source"] == "user"


def test_activate_makes_the_default_follow_and_revert_undoes_it(installed):
    version = model_store.activate("site-a")
    assert version.active and (installed["store"] / "active.json").is_file()
    assert model_store.default_model_path() == installed["site-a"]
    assert model_store.resolve_model(None) == installed["site-a"]
    assert active_names() == ["site-a"]
    assert model_store.revert() is True
    assert model_store.default_model_path() == installed["shipped"] and active_names() == [model_store.DEFAULT_MODEL_NAME]
    assert model_store.revert() is False  # nothing to undo: says so, no error


def test_delete_rules(installed):
    model_store.activate("site-a")
    with pytest.raises(StoreError, match="'site-a' is the active model; run 'seglossbrain models revert'"):
        model_store.delete("site-a")
    with pytest.raises(StoreError, match="shipped model; .* never deleted"):
        model_store.delete(model_store.DEFAULT_MODEL_NAME)
    with pytest.raises(StoreError, match="no user model version named 'nope'"):
        model_store.delete("nope")
    path = model_store.delete("site-b")
    assert not path.exists() and not models.metadata_path(path).exists()
    model_store.revert()
    model_store.delete("site-a")
    assert [v.name for v in model_store.list_versions()] == [model_store.DEFAULT_MODEL_NAME]
    assert installed["shipped"].is_file()


def test_broken_or_missing_active_model_is_an_error_not_a_silent_fallback(installed):
    model_store.activate("site-b")
    for suffix in (".safetensors", ".json"):
        (installed["store"] / f"site-b{suffix}").unlink()
    with pytest.raises(models.ModelError, match="no longer in the model store; run 'seglossbrain models revert'"):
        model_store.default_model_path()
    assert active_names() == []
    (installed["store"] / "active.json").write_text("{not json")
    with pytest.raises(models.ModelError, match="unreadable"):
        model_store.default_model_path()
    model_store.revert()
    assert model_store.default_model_path() == installed["shipped"]


def test_replaced_active_model_is_detected(installed, random_model_file):
    model_store.activate("site-a")
    meta_file = models.metadata_path(installed["site-a"])
    meta = json.loads(meta_file.read_text())
    meta["sha256"] = "0" * 64
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(models.ModelError, match="changed since it was activated"):
        model_store.default_model_path()


def test_activation_refuses_unknown_and_corrupt_versions(installed):
    with pytest.raises(StoreError, match="no model version named 'nope'"):
        model_store.activate("nope")
    data = bytearray(installed["site-a"].read_bytes())
    data[len(data) // 2] ^= 0xFF
    installed["site-a"].write_bytes(bytes(data))
    with pytest.raises(StoreError, match="cannot activate 'site-a'.*checksum"):
        model_store.activate("site-a")
    assert not (installed["store"] / "active.json").exists()


@pytest.mark.parametrize("name,message", [
    ("../x", "model name"), ("a b", "model name"), ("x.safetensors", "model name"), ("", "model name"),
    ("active", "reserved"), ("site-a", "user model named 'site-a' exists"),
    (model_store.DEFAULT_MODEL_NAME, "shipped model named"),
])
def test_new_names_are_checked(installed, name, message):
    with pytest.raises(StoreError, match=message):
        model_store.check_new_name(name)
    model_store.check_new_name("site-c_2.1")


def test_lock_refuses_a_live_holder_and_takes_over_a_stale_one(installed):
    with finetune_lock("first") as lock:
        with pytest.raises(StoreBusyError, match=f"PID {os.getpid()} .*'first'"):
            with finetune_lock("second"):
                pass
        assert json.loads(lock.read_text())["model"] == "first"  # the refused one did not touch it
    assert not lock.exists()
    # PID 2**22 + 1 is above Linux's pid_max default range; a holder on this host that is gone is stale
    lock.write_text(json.dumps({"pid": 4194305, "host": socket.gethostname(), "model": "crashed"}))
    with finetune_lock("third"):
        assert json.loads(lock.read_text())["model"] == "third"
    # on another host the process cannot be checked: refused, with the file to delete if it is stale
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "model": "remote"}))
    with pytest.raises(StoreBusyError, match="If none is running, delete"):
        with finetune_lock("fourth"):
            pass


def test_models_commands(installed, capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"* {model_store.DEFAULT_MODEL_NAME}") and "  site-a" in out
    assert main(["models", "activate", "site-a"]) == 0
    assert "site-a (user) is now the active model" in capsys.readouterr().out
    assert main(["--progress-json", "models", "list"]) == 0
    listing = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert [m["name"] for m in listing["models"] if m["active"]] == ["site-a"]
    assert main(["models", "delete", "site-a"]) == 2
    assert "is the active model" in capsys.readouterr().err
    assert main(["models", "delete", model_store.DEFAULT_MODEL_NAME]) == 2
    assert main(["models", "activate", "nope"]) == 2
    capsys.readouterr()
    assert main(["models", "revert"]) == 0 and "reverted" in capsys.readouterr().out
    assert main(["models", "delete", "site-a"]) == 0 and not installed["site-a"].exists()


def test_with_two_shipped_models_the_default_is_active_and_the_other_selectable_by_name(installed, random_model_file):
    older = copy_model(random_model_file, installed["shipped"].parent, "wong2018-explog")  # the model shipped before
    assert model_store.DEFAULT_MODEL_NAME != "wong2018-explog"
    assert model_store.default_model_path() == installed["shipped"]
    assert active_names() == [model_store.DEFAULT_MODEL_NAME]
    assert model_store.resolve_model("wong2018-explog") == older


def with_validation(path, before, after, base="wong2018-explog-fs"):
    """Record a fine-tune's own validation (mean Dice before -> after) in a model's metadata."""
    meta_path = models.metadata_path(path)
    metadata = json.loads(meta_path.read_text())
    metadata.update({"base": {"name": base, "source": "shipped"},
                     "validation": {"before": {"mean": before}, "after": {"mean": after}}})
    meta_path.write_text(json.dumps(metadata))


def test_activating_a_version_worse_than_its_base_needs_force(installed, capsys):
    with_validation(installed["site-a"], before=0.80, after=0.78)
    with pytest.raises(StoreError, match=r"scored worse than its base wong2018-explog-fs \(mean Dice 0.800 -> 0.780\)"):
        model_store.activate("site-a")
    assert active_names() == [model_store.DEFAULT_MODEL_NAME]
    assert main(["models", "activate", "site-a"]) == 2
    assert "--force" in capsys.readouterr().err and active_names() == [model_store.DEFAULT_MODEL_NAME]
    assert main(["models", "activate", "site-a", "--force"]) == 0
    assert active_names() == ["site-a"]
    with_validation(installed["store"] / "site-b.safetensors", before=0.80, after=0.83)  # better: no question
    assert model_store.activate("site-b").active
