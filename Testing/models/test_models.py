"""Model files: round trip, and refusal of tampered, truncated, mismatched or missing files."""
import json
import shutil

import pytest
import torch

from SegLossBrainLib.models import files as models
from SegLossBrainLib.models import store
from SegLossBrainLib.models.files import ModelError, load_model, save_model
from SegLossBrainLib.models.store import NoModelError
from SegLossBrainLib.networks import build_network


def copy_model(source, folder, name="m"):
    target = folder / f"{name}.safetensors"
    shutil.copy(source, target)
    shutil.copy(models.metadata_path(source), models.metadata_path(target))
    return target


def test_round_trip_keeps_outputs(tmp_path):
    torch.manual_seed(1)
    net = build_network("wong2018").eval()
    path = save_model(net, tmp_path / "m.safetensors", {"loss": {"name": "explog"}})
    loaded, metadata = load_model(path)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        expected, actual = net(x), loaded(x)
    assert torch.allclose(expected, actual, atol=2e-2 * expected.abs().max().item())  # float16 storage
    assert metadata["architecture"] == "wong2018" and metadata["num_classes"] == 20
    assert metadata["sha256"] == models.sha256_of(path)
    assert path.stat().st_size < 20e6  # compact: float16


def test_tampered_file_is_refused(tmp_path, random_model_file):
    path = copy_model(random_model_file, tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="checksum"):
        load_model(path)


def test_truncated_file_is_refused(tmp_path, random_model_file):
    path = copy_model(random_model_file, tmp_path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelError, match="truncated, corrupted or was modified"):
        load_model(path)


def _edit_metadata(path, **changes):
    meta_file = models.metadata_path(path)
    meta = json.loads(meta_file.read_text())
    meta.update(changes)
    meta_file.write_text(json.dumps(meta))


@pytest.mark.parametrize("changes,message", [
    ({"num_classes": 5}, "predicts 5 classes"),
    ({"label_table_version": "000000000000"}, "label table"),
    ({"architecture": "resnet"}, "unknown architecture"),
])
def test_mismatched_model_is_refused(tmp_path, random_model_file, changes, message):
    path = copy_model(random_model_file, tmp_path)
    _edit_metadata(path, **changes)
    with pytest.raises(ModelError, match=message):
        load_model(path)


def test_weights_of_another_architecture_are_refused(tmp_path, random_model_file):
    path = copy_model(random_model_file, tmp_path)
    _edit_metadata(path, architecture="vnet")
    with pytest.raises(ModelError, match="does not fit architecture 'vnet'"):
        load_model(path)


def test_missing_files(tmp_path, random_model_file):
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "absent.safetensors")
    path = copy_model(random_model_file, tmp_path)
    models.metadata_path(path).unlink()
    with pytest.raises(ModelError, match="metadata"):
        load_model(path)


def test_shipped_models_are_never_overwritten(tmp_path, monkeypatch, random_model_file):
    resources = tmp_path / "Resources"
    (resources / "Models").mkdir(parents=True)
    shutil.copy(models.load_label_table().path, resources / "SegLossBrainLabels.csv")
    monkeypatch.setenv("SEGLOSSBRAIN_RESOURCES", str(resources))
    shipped = copy_model(random_model_file, resources / "Models", "wong2018-explog")
    before = shipped.read_bytes()
    with pytest.raises(ModelError, match="never overwritten"):
        save_model(build_network("wong2018"), shipped, {}, overwrite=True)
    assert shipped.read_bytes() == before


def test_listing_default_and_no_model(tmp_path, monkeypatch, random_model_file):
    resources = tmp_path / "Resources"
    resources.mkdir()
    shutil.copy(models.load_label_table().path, resources / "SegLossBrainLabels.csv")
    monkeypatch.setenv("SEGLOSSBRAIN_RESOURCES", str(resources))
    monkeypatch.setenv("SEGLOSSBRAIN_MODEL_STORE", str(tmp_path / "store"))
    with pytest.raises(NoModelError, match="no trained SegLossBrain model is installed"):
        store.default_model_path()
    (resources / "Models").mkdir()
    copy_model(random_model_file, resources / "Models", "wong2018-explog")
    (tmp_path / "store").mkdir()
    copy_model(random_model_file, tmp_path / "store", "site-a")
    entries = store.list_models()
    assert [(e.name, e.source) for e in entries] == [("wong2018-explog", "shipped"), ("site-a", "user")]
    assert store.default_model_path().name == "wong2018-explog.safetensors"
    assert store.resolve_model("site-a").parent == tmp_path / "store"
    with pytest.raises(ModelError, match="no model named 'nope'"):
        store.resolve_model("nope")
