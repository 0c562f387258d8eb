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


def test_size_counts_a_regular_files_bytes_and_refuses_anything_else(tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(b"x" * 1234)
    (tmp_path / "zero").symlink_to("/dev/zero")  # a pod's way to fill our disk
    (tmp_path / "link").symlink_to(src)  # a link is never followed, even to a regular file
    t = LocalTransport()
    assert t.size(str(src)) == 1234
    for path, why in ((tmp_path / "missing", "no such file"), (tmp_path, "not a regular file"),
                      (tmp_path / "zero", "is a symlink on the pod"), (tmp_path / "link", "is a symlink on the pod")):
        with pytest.raises(TransportError, match=why):
            t.size(str(path))


def test_get_refuses_a_file_longer_than_max_bytes_and_leaves_nothing(tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(b"x" * 5000)
    home = tmp_path / "home"
    with pytest.raises(TransportError, match="over 4999 bytes"):
        LocalTransport().get(str(src), home / "a.bin", max_bytes=4999)
    assert not list(home.iterdir())
    assert LocalTransport().get(str(src), home / "a.bin", max_bytes=5000) == sha256_file(src)
