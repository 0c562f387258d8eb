"""The SSH transport against a real sshd: streamed exec, verified copies over parallel lanes, clear failures."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from engine.errors import TransportError
from engine.hashing import sha256_file
from engine.transport.ssh import PARALLEL_FROM, SshTarget, SshTransport


@pytest.fixture
def transport(plain_sshd, tmp_path):
    t = SshTransport(SshTarget(plain_sshd.host, plain_sshd.port, plain_sshd.user, plain_sshd.key,
                               tmp_path / "known_hosts", python=sys.executable))
    t.open(deadline_s=30)
    yield t
    t.close()


def test_exec_streams_lines_and_returns_the_exit_code(transport):
    lines = []
    assert transport.exec("echo one; echo two >&2; printf three; exit 7", on_line=lines.append) == 7
    assert lines == ["one", "two", "three"]


@pytest.mark.parametrize("size", [1000, PARALLEL_FROM * 2 + 12345])
def test_put_then_get_round_trips_exactly(transport, tmp_path, size):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(size))
    remote = str(tmp_path / "pod" / "deep" / "file.bin")
    digest = transport.put(src, remote)
    assert digest == sha256_file(src) == sha256_file(Path(remote))
    assert not Path(remote + ".part").exists()
    back = tmp_path / "home" / "file.bin"
    assert transport.get(remote, back) == digest
    assert back.read_bytes() == src.read_bytes()


def test_a_download_that_does_not_match_its_hash_leaves_nothing(transport, tmp_path):
    remote = tmp_path / "result.bin"
    remote.write_bytes(b"what the pod wrote")
    with pytest.raises(TransportError, match="sha256 mismatch"):
        transport.get(str(remote), tmp_path / "home" / "result.bin", sha256="0" * 64)
    assert list((tmp_path / "home").iterdir()) == []


def test_a_dead_connection_is_a_transport_error_and_reconnect_restores_it(transport):
    transport.client.get_transport().sock.close()  # the network goes away under us
    with pytest.raises(TransportError):
        transport.exec("echo hello")
    transport.reconnect(deadline_s=10)
    assert transport.exec("true") == 0


def test_an_unreachable_host_gives_up_at_the_deadline(tmp_path):
    t = SshTransport(SshTarget("127.0.0.1", 9, "root", tmp_path / "no-key", tmp_path / "known_hosts"))
    with pytest.raises(TransportError, match="could not reach root@127.0.0.1:9 over SSH within 1s"):
        t.open(deadline_s=1)


def test_size_and_max_bytes_refuse_what_is_too_big_or_grows_and_leave_nothing(transport, tmp_path, monkeypatch):
    remote = tmp_path / "pod" / "out.bin"
    remote.parent.mkdir()
    remote.write_bytes(b"x" * 5000)
    assert transport.size(str(remote)) == 5000
    with pytest.raises(TransportError, match="not a regular file"):
        transport.size(str(remote.parent))
    with pytest.raises(TransportError, match="cannot stat"):
        transport.size(str(tmp_path / "missing"))
    home = tmp_path / "home"
    with pytest.raises(TransportError, match="over 4999 bytes"):
        transport.get(str(remote), home / "out.bin", max_bytes=4999)
    assert list(home.iterdir()) == []

    checked = transport.size

    def size_then_grow(path: str) -> int:  # the pod appends right after the size was checked
        size = checked(path)
        with open(remote, "ab") as fh:
            fh.write(b"more")
        return size

    monkeypatch.setattr(transport, "size", size_then_grow)
    with pytest.raises(TransportError, match="over 5000 bytes"):
        transport.get(str(remote), home / "out.bin", max_bytes=5000)
    assert list(home.iterdir()) == []


def test_write_private_makes_a_new_0600_file_even_over_a_readable_one(transport, tmp_path):
    target = tmp_path / "secrets" / "token"
    target.parent.mkdir(mode=0o700)
    target.write_text("old")
    target.chmod(0o644)
    transport.write_private(str(target), b"new secret")
    assert target.read_bytes() == b"new secret"
    assert target.stat().st_mode & 0o777 == 0o600


def test_a_symlink_on_the_pod_is_refused_not_followed_even_if_swapped_in_after_size(transport, tmp_path, monkeypatch):
    secret = tmp_path / "etc" / "shadow"  # what a link would bring home
    secret.parent.mkdir()
    secret.write_bytes(b"root:$6$not-for-home")
    out = tmp_path / "pod" / "out"
    (out / "adapter").mkdir(parents=True)
    link = out / "adapter" / "x"
    link.symlink_to(secret)
    home = tmp_path / "home"
    with pytest.raises(TransportError, match=r"adapter/x is a symlink on the pod: not fetched"):
        transport.size(str(link))
    with pytest.raises(TransportError, match="is a symlink on the pod"):
        transport.get(str(link), home / "x", sha256=sha256_file(secret))
    (out / "plots").symlink_to(secret.parent)  # a regular file, reached through a linked folder
    assert transport.size(str(out / "plots" / "shadow")) == secret.stat().st_size  # without `within`: not seen
    with pytest.raises(TransportError, match=r"out/plots \(above .*/shadow\) is a symlink on the pod"):
        transport.size(str(out / "plots" / "shadow"), within=str(out))

    link.unlink()
    link.write_bytes(b"adapter weights")
    checked = transport.size

    def size_then_swap(path: str) -> int:  # the pod swaps the file for a link right after it was sized
        size = checked(path)
        link.unlink()
        link.symlink_to(secret)
        return size

    monkeypatch.setattr(transport, "size", size_then_swap)
    with pytest.raises(TransportError, match="is a symlink on the pod"):
        transport.get(str(link), home / "x", sha256=sha256_file(secret))
    assert not home.exists() or list(home.iterdir()) == []
