"""What the emulator's own tests share: an API client, create bodies, SSH into a pod with its host key pinned."""
from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import httpx
import paramiko
import pytest
from tests.emulator import RunPodEmulator, openapi
from tests.emulator.pod import WAIT_S, fingerprint
from tests.sshd import Pinned

RTX5090, RTX4090 = "NVIDIA GeForce RTX 5090", "NVIDIA GeForce RTX 4090"
# RunPod's official image (runpod.md), which the emulator runs as its stand-in: what a test gets by default.
RUNPOD_IMAGE = "runpod/pytorch:1.0.2-cu1281-torch280-ubuntu2404"
LORAPOD_IMAGE = "docker.io/tester/lorapod-trainer:e2e"  # lorapod's own, in a user's repository: start.sh is PID 1
HOST_KEY_LINE = re.compile(r"lorapod-host-key: (\S+) (SHA256:[A-Za-z0-9+/]+)")
needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="sshd's privilege separation and a pod's namespaces need root")


def api(emu: RunPodEmulator, key: str | None = "account", **kw) -> httpx.Client:
    headers = {}
    if key is not None:
        headers["Authorization"] = f"Bearer {emu.api_key if key == 'account' else key}"
    return httpx.Client(base_url=emu.url, headers=headers, timeout=kw.pop("timeout", WAIT_S), **kw)


def body(**over) -> dict:
    request = {"name": "lorapod-test", "image": RUNPOD_IMAGE, "gpu": {"id": RTX5090, "count": 1},
               "cloud": "COMMUNITY", "disk": 40, "ports": ["22/tcp"], "env": {}}
    request.update(over)
    return request


def create(emu: RunPodEmulator, public_key: str | None = None, **over) -> dict:
    request = body(**over)
    if public_key is not None:
        request["env"] = {**request["env"], "PUBLIC_KEY": public_key, "SSH_PUBLIC_KEY": public_key}
    with api(emu) as client:
        answer = client.post("/pods", json=request)
    assert answer.status_code == 201, answer.text
    return answer.json()


def wait_until(condition, what: str):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


def log_events(client: httpx.Client, pod_id: str, count: int | None = None, until=None, headers=None,
               **params) -> tuple[list[dict], httpx.Response]:
    """Reads the pod's live log stream (it never ends by itself) until `count` events came, or one whose
    payload satisfies `until`, then hangs up. Returns the events (id, data, payload) and the response."""
    events: list[dict] = []
    with client.stream("GET", f"/pods/{pod_id}/logs", params=params, headers=headers) as response:
        if response.status_code != 200:
            response.read()
            return events, response
        buffer = ""
        for text in response.iter_text():
            buffer += text
            *complete, buffer = buffer.split("\n\n")
            for block in complete:
                [event] = openapi.parse_sse(block + "\n\n")
                [event["payload"]] = openapi.validate_log_stream(block + "\n\n")
                events.append(event)
                if (count is not None and len(events) >= count) or (until is not None and until(event["payload"])):
                    return events, response
    raise AssertionError(f"the log stream ended by itself after {len(events)} events: it is a live tail")


def backlog(emu: RunPodEmulator, pod_id: str, tail: int = 100) -> int:
    """How many events a logs request sends before any live line: the pod's last `tail` lines."""
    return min(tail, emu.pod(pod_id).log.last_seq())


def pinned_host_keys(emu: RunPodEmulator, pod_id: str) -> dict[str, str]:
    """The host keys a pod announced in its log (lorapod's start.sh does; RunPod's images do not)."""
    with api(emu) as client:
        events, _ = log_events(client, pod_id, count=backlog(emu, pod_id))
    lines = [event["payload"]["line"] for event in events]
    return dict(HOST_KEY_LINE.search(line).groups() for line in lines if HOST_KEY_LINE.search(line))


def host_keys(emu: RunPodEmulator, pod_id: str) -> dict[str, str]:
    """The host keys to pin for a pod: from its log for lorapod's image, else read off the pod's disk (RunPod's
    images name none in their log; a test may look where a client cannot)."""
    pod = emu.pod(pod_id)
    if pod.image_kind == "lorapod":
        return pinned_host_keys(emu, pod_id)
    return dict(fingerprint(path.read_text()) for path in sorted(pod.machine.ssh_dir.glob("ssh_host_*_key.pub")))


def graphql(emu: RunPodEmulator, query: str, key: str | None = "account", variables: dict | None = None,
            how: str = "bearer") -> httpx.Response:
    """A GraphQL request to the emulator, the key as a Bearer header or (how="param") as ?api_key=."""
    key = emu.api_key if key == "account" else key
    headers, params = {}, {}
    if key is not None:
        if how == "param":
            params["api_key"] = key
        else:
            headers["Authorization"] = f"Bearer {key}"
    payload: dict = {"query": query}
    if variables is not None:
        payload["variables"] = variables
    return httpx.post(emu.graphql_url, json=payload, headers=headers, params=params, timeout=WAIT_S)


def ssh(emu: RunPodEmulator, pod_id: str, pkey: paramiko.PKey, pinned: dict[str, str] | None = None,
        port: int | None = None) -> paramiko.SSHClient:
    direct = emu.pod(pod_id).to_json()["ssh"]["direct"]
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(Pinned(pinned if pinned is not None else host_keys(emu, pod_id)))
    client.connect(direct["host"], port=port or direct["port"], username=direct["username"], pkey=pkey,
                   look_for_keys=False, allow_agent=False, timeout=WAIT_S, banner_timeout=WAIT_S)
    return client


def run(client: paramiko.SSHClient, command: str) -> str:
    _, stdout, _ = client.exec_command(command, timeout=WAIT_S)
    out = stdout.read().decode()
    assert stdout.channel.recv_exit_status() == 0, out
    return out


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie, dead but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=WAIT_S).close()
    except ConnectionRefusedError:
        return True
    return False

