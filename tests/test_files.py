"""Atomic writes: an interrupted write leaves the previous file and no temporary file behind."""

import pytest

from styletransfer.runtime.files import atomic_open


def test_a_failed_write_keeps_the_previous_version(tmp_path):
    path = tmp_path / "sub" / "weights.pth"
    with atomic_open(path, "wb") as handle:
        handle.write(b"version 1")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_open(path, "wb") as handle:
            handle.write(b"half of version 2")
            raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"version 1"
    assert [p.name for p in path.parent.iterdir()] == ["weights.pth"]
    with pytest.raises(ValueError, match="writes only"):
        with atomic_open(path, "rb"):
            pass
