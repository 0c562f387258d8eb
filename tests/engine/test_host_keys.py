"""engine/host_keys.py: the host keys a pod's log names, in both formats, and nothing else."""
from __future__ import annotations

import subprocess

import paramiko

from engine.host_keys import announced
from engine.sshkeys import fingerprint


def keygen_line(tmp_path, kind: str, bits: int | None = None) -> tuple[str, str]:
    """(ssh-keygen -lf's line for a fresh key, `<type> SHA256:<fp>` of that key as paramiko names it)."""
    key = tmp_path / f"host_{kind}_{bits}"
    subprocess.run(["ssh-keygen", "-q", "-t", kind, *(["-b", str(bits)] if bits else []), "-N", "", "-f", str(key)],
                   check=True)
    line = subprocess.run(["ssh-keygen", "-lf", f"{key}.pub"], capture_output=True, text=True, check=True).stdout
    loaded = paramiko.PKey.from_path(str(key))
    return line.strip(), fingerprint(loaded)


def test_runpods_keygen_lines_name_keys_as_paramiko_sees_them(tmp_path):
    lines, expected = ["SSH host keys:"], []
    for kind, bits in (("ed25519", None), ("ecdsa", 256), ("ecdsa", 384), ("rsa", 2048)):
        line, names = keygen_line(tmp_path, kind, bits)
        lines += [f"Key: /etc/ssh/ssh_host_{kind}_key.pub", line]
        expected.append(names)
    assert announced(lines) == sorted(expected)


def test_lorapod_lines_and_duplicates(tmp_path):
    line = "lorapod-host-key: ssh-ed25519 SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU"
    assert announced([line, line + "\r"]) == ["ssh-ed25519 SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU"]


def test_a_scanners_user_name_cannot_announce_a_key():
    """sshd's own lines carry text a stranger chose (the user name), never at the start of the line."""
    forged = "256 SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU root@x (ED25519)"
    assert announced([f"Invalid user {forged} from 203.0.113.9 port 4242",
                      f"Connection closed by invalid user lorapod-host-key: ssh-ed25519 SHA256:AAAA 203.0.113.9"]) == []
    assert announced([forged]) != []  # the same text alone on its line is a key line
