"""The one atomic-write helper: a file appears whole or not at all."""
import pytest

from SegLossBrainLib.imageio.atomic import atomic_path, open_atomic, write_bytes_atomic, write_text_atomic


def test_written_whole_and_replacing_the_old_file(tmp_path):
    target = tmp_path / "out.json"
    write_text_atomic(target, "old")
    assert write_bytes_atomic(target, b"new") == target
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with open_atomic(target, "w", newline="") as handle:
            handle.write("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_the_temporary_file_keeps_the_suffix_and_folder(tmp_path):
    with atomic_path(tmp_path / "labels.seg.nrrd") as temporary:
        assert temporary.parent == tmp_path and temporary.name.endswith("labels.seg.nrrd")
        temporary.write_bytes(b"x")
    assert (tmp_path / "labels.seg.nrrd").read_bytes() == b"x"
