"""Fixtures for the pod-side tests; the helpers behind them are in podside.py."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.loopback import serving
from tests.remote_image.podside import REMOTE_IMAGE, FakeRunPodApi, Recorded, Spawned


@pytest.fixture
def runpod_api():
    api = FakeRunPodApi()

    class Handler(BaseHTTPRequestHandler):
        def do_DELETE(self):
            api.requests.append(Recorded("DELETE", self.path, self.headers.get("Authorization")))
            status = api.statuses.pop(0) if api.statuses else 204
            body = b"" if status == 204 else json.dumps({"title": "scripted", "status": status}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/problem+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            api.arrived.set()

        def log_message(self, *args):
            pass

    with serving(Handler) as url:
        api.url = url + "/v2"
        yield api


@pytest.fixture
def private_dir():
    """A folder whose every ancestor is neither group- nor world-writable, as sshd's StrictModes demands of
    authorized_keys (pytest's tmp_path lives under /tmp, which is world-writable). Under $HOME for that."""
    path = Path(tempfile.mkdtemp(prefix="lorapod-test-", dir=Path.home()))
    os.chmod(path, 0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def spawn():
    started: list[Spawned] = []

    def _spawn(argv: list[str], env: dict[str, str], log: Path) -> Spawned:
        started.append(Spawned(argv, env, log))
        return started[-1]

    yield _spawn
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def watchdog_module():
    """remote_image/watchdog.py imported by path: it is a script for the pod, not a package of ours."""
    spec = importlib.util.spec_from_file_location("lorapod_watchdog", REMOTE_IMAGE / "watchdog.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
