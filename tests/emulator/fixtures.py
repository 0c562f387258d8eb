"""pytest fixtures for the RunPod emulator. Import them where they are needed:

    from tests.emulator.fixtures import runpod_emulator  # noqa: F401  (in a conftest.py or a test module)
"""
from __future__ import annotations

import pytest
from tests import sshd
from tests.emulator.server import RunPodEmulator


@pytest.fixture
def runpod_emulator():
    """A started RunPodEmulator (default key and small delays; change its attributes and faults before the
    creates they should affect). At teardown it is stopped, which kills every pod's processes, and the test
    fails if a response broke the OpenAPI document or the emulator itself failed. Pods the client left
    running are the test's to assert on: emu.live_pods() still lists them after the stop."""
    if not sshd.installed():
        pytest.skip(sshd.MISSING)
    emulator = RunPodEmulator().start()
    try:
        yield emulator
    finally:
        emulator.stop()
    emulator.assert_clean()
