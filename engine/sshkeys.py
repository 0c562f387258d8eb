"""A fresh ed25519 key pair per run, and host-key pinning.

The run's key pair lives in <run_dir>/ssh/ (mode 0600): it opens this run's pod and nothing else. Host keys
are pinned in <run_dir>/ssh/known_hosts at first contact — or checked against the fingerprints the pod's
start script printed to its log, when the image prints them — and enforced on every later connection.
"""
from __future__ import annotations

import os
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.errors import HostKeyError


def run_keypair(ssh_dir: Path, comment: str) -> tuple[Path, str]:
    """(private key path, public key line); made once per run folder."""
    ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    private, public = ssh_dir / "id_ed25519", ssh_dir / "id_ed25519.pub"
    if not private.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        public.write_text(f"{line.decode()} {comment}\n")
    return private, public.read_text().strip()


def fingerprint(key: paramiko.PKey) -> str:
    """`<type> SHA256:<base64>`, as ssh-keygen -l and start.sh's `lorapod-host-key:` lines print it."""
    return f"{key.get_name()} {key.fingerprint}"


class PinHostKey(paramiko.MissingHostKeyPolicy):
    """Accept an unknown host key only if it matches what we expect, then record it for later connections.

    `expected` holds fingerprints the pod printed to its log; empty means trust on first contact — the run's
    known_hosts still holds the key from then on, so a changed key later is refused.
    """

    def __init__(self, known_hosts: Path, expected: list[str]):
        self.known_hosts = known_hosts
        self.expected = set(expected)
        self.accepted: str | None = None  # the fingerprint taken in, when the key was not known yet

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        got = fingerprint(key)
        if self.expected and got not in self.expected:
            raise HostKeyError(f"host key mismatch for {hostname}: the pod's log announced "
                               f"{', '.join(sorted(self.expected))} but the server presented {got}",
                               "something else answered on that address; nothing was sent to it")
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.accepted = got
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        client.save_host_keys(str(self.known_hosts))
