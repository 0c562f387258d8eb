"""The local transport: streamed exec, and copies that are verified or leave nothing behind."""
from __future__ import annotations

import pytest

from engine.errors import TransportError
from engine.hashing import sha256_file
from engine.transport.local import LocalTransport


def test_exec_streams_lines_and_returns_the_exit_code():
    lines = []
    assert LocalTransport().exec("echo one; echo two >&2; exit 3", on_line=lines.append) == 3
    assert lines == ["one", "two"]


def test_put_and_get_verify_sha256(tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(b"x" * 100_000)
    t = LocalTransport()
    digest = t.put(src, str(tmp_path / "pod" / "deep" / "a.bin"))
    assert digest == sha256_file(src)
    assert t.get(str(tmp_path / "pod" / "deep" / "a.bin"), tmp_path / "home" / "a.bin", sha256=digest) == digest


def test_a_hash_mismatch_raises_and_leaves_no_file(tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(b"payload")
    with pytest.raises(TransportError, match="sha256 mismatch"):
        LocalTransport().get(str(src), tmp_path / "home" / "a.bin", sha256="0" * 64)
    assert not list((tmp_path / "home").iterdir())
