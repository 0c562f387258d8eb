"""Tests that need no other test before them: a few test files, each run alone in a new pytest process on what
looks like a freshly booted machine — as root, in a private mount namespace with an empty /run (a tmpfs after
every reboot), so /run/sshd does not exist until the test harness makes it.

The files are the ones that start sshd, where a first run on a fresh machine broke before (the privilege-
separation folder was made only by whichever test happened to run later)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests import sshd
from tests.conftest import REPO

ALONE = ["tests/engine/test_ssh_transport.py", "tests/remote_image/test_start_sh.py",
         "tests/emulator/test_emulator.py"]


def fresh_run_command(*argv: str) -> list[str]:
    """argv in a new mount namespace whose /run is an empty tmpfs, where this machine allows one (root with
    unshare); elsewhere argv as it is (an unprivileged sshd needs no /run/sshd)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return list(argv)
    script = 'mount -t tmpfs tmpfs /run && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv]


def alone(*pytest_args: str) -> subprocess.CompletedProcess:
    # The project's addopts cleared: no workers, no random order, no cache; the file runs first, in one process.
    cmd = fresh_run_command(sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:randomly",
                            "-p", "no:xdist", "-p", "no:cacheprovider", *pytest_args)
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)


@sshd.needs_sshd
@pytest.mark.parametrize("path", ALONE)
def test_a_file_passes_alone_on_a_fresh_machine(path):
    done = alone(path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout.splitlines()[-1], done.stdout[-2000:]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")
@sshd.needs_sshd
def test_without_its_preparation_sshd_fails_at_once_in_its_own_words():
    """The harness is what makes the fresh machine work: skip sshd.prepare() and the emulator refuses to start
    at once, with sshd's message, instead of leaving a client waiting for a pod that never gets ready."""
    probe = ("from tests import sshd; sshd.prepare = lambda: None\n"
             "from tests.emulator import RunPodEmulator\n"
             "try:\n    RunPodEmulator().start()\n"
             "except RuntimeError as exc:\n    print('refused:', exc)\n")
    done = subprocess.run(fresh_run_command(sys.executable, "-c", probe), cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert "refused:" in done.stdout and "Missing privilege separation directory: /run/sshd" in done.stdout, \
        done.stdout + done.stderr
