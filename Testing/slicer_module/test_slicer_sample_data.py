"""The demo volume's registration with Slicer's Sample Data module, headless: a stand-in for SampleDataLogic
records the call; the file:// URI is read back the way the module's downloader reads it (urllib) and checked
against the checksum computed here independently."""
import hashlib
import struct
import sys
import types
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT

from SegLossBrainSlicer import sample_data  # noqa: E402

RESOURCES = ROOT / "Resources"
DEMO = RESOURCES / "Samples" / "synthetic_t1_demo.nii.gz"


class FakeSampleDataLogic:
    """Records registerCustomSampleDataSource calls (a static method in Slicer; called on the class)."""

    calls = []

    @classmethod
    def registerCustomSampleDataSource(cls, **kwargs):
        cls.calls.append(kwargs)


@pytest.fixture
def logic():
    FakeSampleDataLogic.calls = []
    return FakeSampleDataLogic


def local_path(uri: str) -> Path:
    parsed = urllib.parse.urlparse(uri)
    assert parsed.scheme == "file" and parsed.netloc == "", uri
    return Path(urllib.request.url2pathname(parsed.path))


def test_registration_names_the_category_file_node_checksum_and_load_type(logic):
    assert sample_data.register(logic, RESOURCES) is True
    (call,) = logic.calls
    expected_sha256 = hashlib.sha256(DEMO.read_bytes()).hexdigest()
    assert call["category"] == "SegLossBrain"
    assert call["sampleName"] == "SegLossBrainDemoT1" and call["nodeNames"] == "SegLossBrainDemoT1"
    assert local_path(call["uris"]) == DEMO.resolve() and local_path(call["uris"]).is_file()
    assert call["fileNames"].endswith(".nii.gz") and call["fileNames"].startswith("SegLossBrain")  # own cache name
    assert call["checksums"] == f"SHA256:{expected_sha256}"
    assert call["loadFileType"] == "VolumeFile"
    thumbnail = Path(call["thumbnailFileName"])
    assert thumbnail == (RESOURCES / "Icons" / "SegLossBrainDemoT1.png").resolve()
    data = thumbnail.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) <= 30_000
    assert 100 <= struct.unpack(">II", data[16:24])[1] <= 300  # height: a Sample Data button's thumbnail


def test_checksum_is_in_slicers_format():
    util = pytest.importorskip("slicer.util")
    algo, digest = util.extractAlgoAndDigest(sample_data.sha256_checksum(DEMO))
    assert algo == "SHA256" and digest == util.computeChecksum("SHA256", str(DEMO))


def test_the_uri_downloads_like_a_remote_one_and_matches_the_checksum(logic, tmp_path):
    """Sample Data copies ``uris`` into its cache with urllib.request.urlretrieve, then verifies the checksum."""
    sample_data.register(logic, RESOURCES)
    call = logic.calls[0]
    cached = tmp_path / call["fileNames"]
    urllib.request.urlretrieve(call["uris"], str(cached))
    assert "SHA256:" + hashlib.sha256(cached.read_bytes()).hexdigest() == call["checksums"]


def test_resources_without_a_demo_register_nothing(logic, tmp_path):
    assert sample_data.register(logic, tmp_path) is False and logic.calls == []
    (tmp_path / "Samples").mkdir()
    (tmp_path / "Samples" / "synthetic_t1_demo.nii.gz").write_bytes(b"demo")
    assert sample_data.register(logic, tmp_path) is True
    assert logic.calls[0]["thumbnailFileName"] is None  # no icon there: Sample Data shows a plain button
    assert logic.calls[0]["checksums"] == "SHA256:" + hashlib.sha256(b"demo").hexdigest()


def test_registration_waits_for_startup_and_never_breaks_the_module(monkeypatch, logic, caplog):
    connections = []
    app = types.SimpleNamespace(connect=lambda signal, slot: connections.append((signal, slot)))
    sample_data.register_on_startup(app)
    sample_data.register_on_startup(None)  # headless: no application, nothing to wait for
    assert connections == [("startupCompleted()", sample_data.register_in_slicer)]
    fake = types.ModuleType("SampleData")
    fake.SampleDataLogic = logic
    monkeypatch.setitem(sys.modules, "SampleData", fake)
    assert connections[0][1]() is True and local_path(logic.calls[0]["uris"]) == DEMO.resolve()
    monkeypatch.setitem(sys.modules, "SampleData", None)  # no Sample Data module in this application
    assert sample_data.register_in_slicer() is False
    assert "not added to Sample Data" in caplog.text
