"""The emulator's container when its sshd cannot run: the boot ends at once, in sshd's own words."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests import sshd
from tests.emulator.pod import ContainerLog, PodMachine


@pytest.fixture
def machine_folder():
    folder = Path(tempfile.mkdtemp(prefix="lorapod-podmachine-", dir=Path.home()))  # StrictModes: not /tmp
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@sshd.needs_sshd
def test_an_sshd_that_dies_after_its_config_check_ends_the_boot_with_its_message(machine_folder, monkeypatch):
    # An "sshd" that passes `sshd -t` like the real one and then dies the way sshd does on a broken machine.
    fake = machine_folder / "bin" / "sshd"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nfor a; do [ "$a" = -t ] && exec {sshd.SSHD} "$@"; done\n'
                    'echo "Missing privilege separation directory: /run/sshd" >&2\nexit 255\n')
    os.chmod(fake, 0o755)
    monkeypatch.setattr(sshd, "SSHD", str(fake))
    log = ContainerLog()
    machine = PodMachine(machine_folder / "pod", log)
    try:
        machine.boot({}, {"HOME": str(machine_folder)}, [], watchdog=False)
        assert not machine.up
        assert machine.failed == "sshd did not start (sshd exited): see the container log", machine.failed
        assert "Missing privilege separation directory" in log.text()
        assert "podinit: sshd exited with status 255" in log.text()
    finally:
        machine.kill()
