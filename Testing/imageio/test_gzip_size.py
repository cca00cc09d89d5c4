"""The truncation check counts a .gz stream as Python's gzip module reads it (concatenated members, zero padding)
and refuses a cut or corrupted one."""
import gzip
import random

import pytest

from SegLossBrainLib.imageio.content import _decompressed_size
from SegLossBrainLib.imageio.names import InputError

DATA = random.Random(0).randbytes(5_000_000) + b"x" * 1_000_000  # incompressible: members cross the 4 MiB read blocks


@pytest.mark.parametrize("blob", [
    gzip.compress(DATA),
    gzip.compress(DATA) + gzip.compress(DATA[:1000]),  # concatenated members
    gzip.compress(DATA) + b"\0" * 7,  # zero padding after the member (gzip and gunzip accept it)
    gzip.compress(DATA) + b"\0\0" + gzip.compress(DATA),
], ids=["one member", "two members", "zero padding", "padding between members"])
def test_the_size_is_what_gzip_reads(tmp_path, blob):
    path = tmp_path / "volume.nii.gz"
    path.write_bytes(blob)
    with gzip.open(path) as stream:
        expected = len(stream.read())
    assert _decompressed_size(path) == expected


@pytest.mark.parametrize("damage", ["cut", "crc"])
def test_a_cut_or_corrupted_stream_is_refused(tmp_path, damage):
    whole = gzip.compress(DATA)
    blob = whole[: len(whole) // 2] if damage == "cut" else whole[:-8] + b"\1\2\3\4" + whole[-4:]
    path = tmp_path / "volume.nii.gz"
    path.write_bytes(blob)
    with pytest.raises(InputError, match="truncated or corrupt"):
        _decompressed_size(path)
