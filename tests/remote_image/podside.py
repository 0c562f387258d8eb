"""Helpers for the pod-side tests: a loopback stand-in for RunPod's API, free ports, and processes started
in their own process group so teardown stops everything they spawned. The fixtures are in conftest.py."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REMOTE_IMAGE = Path(__file__).resolve().parents[2] / "remote_image"
WAIT_S = 30  # upper bound for something that should happen at once; never a measured duration


@dataclass
class Recorded:
    method: str
    path: str
    authorization: str | None
    way: str = ""  # rest-read, rest-delete, rest-action, graphql-read, graphql (terminate), or "?"
    body: dict | None = None


@dataclass
class FakeRunPodApi:
    """RunPod's pod routes as a pod's watchdog uses them, each answering its scripted statuses in turn and then
    the usual success; `refuse` holds the ways that always answer 403 (GraphQL: 200 with `errors`, as
    GraphQL refuses), for a pod key whose powers differ. Every request is recorded with its way."""

    statuses: dict[str, list[int]] = field(default_factory=dict)  # way -> statuses to answer first
    refuse: set[str] = field(default_factory=set)
    deleted: bool = False  # once a delete succeeded, reads find no pod (REST 404, GraphQL `pod: null`)
    requests: list[Recorded] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def answer(self, way: str) -> int:
        if way in self.refuse:
            return 403
        queued = self.statuses.get(way) or []
        if queued:
            return queued.pop(0)
        if way in ("rest-read", "graphql-read") and self.deleted:
            return 404
        if way in ("rest-delete", "rest-action", "graphql"):
            self.deleted = True
        return 0  # the route's success

    def wait_for(self, count: int = 1, way: str | None = None) -> list[Recorded]:
        while len(self.of(way)) < count:
            assert self.arrived.wait(WAIT_S), f"{count} request(s) expected, got {self.requests}"
            self.arrived.clear()
        return self.of(way)

    def of(self, way: str | None = None) -> list[Recorded]:
        return [r for r in self.requests if way is None or r.way == way]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that could steer the pod-side scripts, plus `extra`.
    RUNPOD_* are set empty so the watchdog never reads them from this machine's /proc/1/environ."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LORAPOD_", "RUNPOD_")) and k not in ("SSH_PUBLIC_KEY", "PUBLIC_KEY")}
    env.update(RUNPOD_POD_ID="", RUNPOD_API_KEY="")
    env.update(extra)
    return env


class Spawned:
    """A process in its own process group, its output (stdout and stderr) in a file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path):
        self.log = log
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(argv, env=env, stdout=self._out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_line(self, text: str) -> str:
        """Blocks until `text` shows up in the output; fails when the process ends or WAIT_S passes first."""
        for _ in range(WAIT_S * 20):
            out = self.output()
            if text in out:
                return out
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} never appeared; output:\n{self.output()}")

    def wait(self) -> int:
        return self.proc.wait(timeout=WAIT_S)

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=WAIT_S)
        self._out.close()


def linter(name: str, package: str) -> str:
    """A linter installed by the `test` extra: next to this interpreter (a venv's bin/) or on PATH."""
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    assert found, f"{name} is not installed: pip install {package} (it is in pyproject.toml's `test` extra)"
    return found
