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
        def _serve(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null") if length else None
            path = self.path.split("?")[0]
            way = {"GET": "rest-read", "DELETE": "rest-delete"}.get(self.command, "?")
            if self.command == "POST" and path.endswith("/action"):
                way = "rest-action"
            elif self.command == "POST" and path.endswith("/graphql"):
                way = "graphql" if "podTerminate" in (body or {}).get("query", "") else "graphql-read"
            api.requests.append(Recorded(self.command, path, self.headers.get("Authorization"), way, body))
            status = api.answer(way)
            if way.startswith("graphql"):
                pod_id = ((body or {}).get("variables") or {}).get("input", {}).get("podId")
                refused, gone = status == 403, status == 404
                status = 200 if refused or gone or not status else status
                doc = {"errors": [{"message": "access denied"}], "data": None} if refused else \
                    {"data": {"podTerminate": None} if way == "graphql" else {"pod": None if gone else {"id": pod_id}}}
                self._send(status, doc)
            elif status in (0, 204) and way == "rest-delete":
                self._send(204, None)
            elif status == 0:
                self._send(200, {"id": path.split("/")[3] if path.count("/") >= 3 else "", "status": "RUNNING"})
            else:
                self._send(status, {"title": "scripted", "status": status})
            api.arrived.set()

        do_GET = do_DELETE = do_POST = _serve

        def _send(self, status, doc):
            body = b"" if doc is None else json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if status < 400 else "application/problem+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

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
