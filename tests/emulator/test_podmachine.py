"""The emulator's container when its sshd cannot run: the boot ends at once, in sshd's own words."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests import sshd
from tests.emulator.helpers import needs_root
from tests.emulator.pod import ContainerLog, PodMachine


@pytest.fixture
def machine_folder():
    folder = Path(tempfile.mkdtemp(prefix="lorapod-podmachine-", dir=Path.home()))  # StrictModes: not /tmp
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@needs_root
@sshd.needs_sshd
@pytest.mark.parametrize("kind, ending", [
    ("lorapod", "the container exited"),  # start.sh execs sshd: sshd's death is PID 1's
    ("runpod", "sshd exited"),  # RunPod's start script runs on without it; the stand-in says so
    ("sshd-pid1", "the container exited"),  # an image nothing documents: its sshd is PID 1
])
def test_an_sshd_that_dies_after_its_config_check_ends_the_boot_with_its_message(machine_folder, monkeypatch,
                                                                                kind, ending):
    # An "sshd" that passes `sshd -t` like the real one and then dies the way sshd does on a broken machine.
    fake = machine_folder / "bin" / "sshd"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nfor a; do [ "$a" = -t ] && exec {sshd.SSHD} "$@"; done\n'
                    'echo "Missing privilege separation directory: /run/sshd" >&2\nexit 255\n')
    os.chmod(fake, 0o755)
    monkeypatch.setattr(sshd, "SSHD", str(fake))
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(machine_folder / "id")], check=True)
    log = ContainerLog()
    machine = PodMachine(machine_folder / "pod", log, kind)
    try:
        machine.boot({"PATH": os.environ["PATH"], "PUBLIC_KEY": (machine_folder / "id.pub").read_text()})
        assert not machine.up
        assert machine.failed == f"sshd did not start ({ending}): see the container log", machine.failed
        assert "Missing privilege separation directory" in log.text()
        if kind == "runpod":
            assert "runpod-emulator: sshd exited with status 255" in log.text()
        else:
            assert f"podinit: {machine.entrypoint.name} exited with status 255" in log.text()
            assert "runpod-emulator:" not in log.text()
    finally:
        machine.kill()
    assert machine.processes() == []
