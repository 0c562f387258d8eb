"""What OpenSSH's sshd needs before a test can start one, prepared by the tests themselves so that the first
test to run on a fresh machine passes like any other.

sshd started by root chroots its unprivileged child into /run/sshd and refuses to start without it ("Missing
privilege separation directory: /run/sshd"). /run is a tmpfs, so the folder is gone after every reboot, and on
Debian only the openssh-server service's own start creates it. The path is compiled into sshd: no option moves it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import paramiko
import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")
MISSING = "OpenSSH's sshd is not installed (Debian: apt-get install openssh-server)"
# The PATH sshd gives a root session (OpenSSH's default for root), which is all an emulated pod's session gets.
SESSION_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def installed() -> bool:
    return os.path.exists(SSHD) and shutil.which("ssh-keygen") is not None


needs_sshd = pytest.mark.skipif(not installed(), reason=MISSING)


def prepare() -> None:
    """Creates the privilege-separation folder when sshd will run as root (as Debian's service would: root's,
    0755); an unprivileged sshd does not use it."""
    if os.geteuid() == 0:
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)


def preflight() -> None:
    """prepare(), then `sshd -t` on a throwaway host key: RuntimeError with sshd's own words when this machine
    cannot run sshd at all, so a test fails at once instead of waiting for a server that never comes."""
    if not installed():
        raise RuntimeError(MISSING)
    prepare()
    with tempfile.TemporaryDirectory(prefix="lorapod-sshd-check-") as folder:
        key = Path(folder) / "host_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True,
                       capture_output=True)
        checked = subprocess.run([SSHD, "-t", "-f", os.devnull, "-h", str(key), "-o", "UsePAM=no"],
                                 capture_output=True, text=True)
    if checked.returncode != 0:
        raise RuntimeError(f"{SSHD} cannot run on this machine: {checked.stderr.strip() or checked.stdout.strip()}")


class Pinned(paramiko.MissingHostKeyPolicy):
    """Accept the server only with a key its start script announced: pinning, never trust on first use."""

    def __init__(self, pinned: dict[str, str]):
        self.pinned = pinned

    def missing_host_key(self, client, hostname, key):
        if self.pinned.get(key.get_name()) != key.fingerprint:
            raise paramiko.SSHException(f"host key {key.get_name()} {key.fingerprint} is not pinned")
