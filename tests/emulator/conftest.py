"""Fixtures of the emulator's own tests (the runpod_emulator fixture comes from tests/conftest.py)."""
from __future__ import annotations

import subprocess

import paramiko
import pytest


@pytest.fixture(scope="module")
def client_key(tmp_path_factory) -> tuple[paramiko.PKey, str]:
    """An SSH key pair for logging in to pods: (paramiko key, OpenSSH public key line)."""
    folder = tmp_path_factory.mktemp("client-key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "id")], check=True)
    return paramiko.Ed25519Key.from_private_key_file(str(folder / "id")), (folder / "id.pub").read_text()
