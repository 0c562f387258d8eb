"""A pod's disk that already holds the training closure, as a network volume does after a first run.

The emulated pod is this machine (its files are the host's), so the venv .ci/pod_closure.sh built (.venv-pod,
LORAPOD_POD_PYTHON's, made by remote_image/install_closure.sh with the same stamp a pod's venv gets) can stand
for the one a first run left on the volume: <workdir>/.lorapod/venvs/<hash> becomes a link to it, and the
installer, run by probe with the same python request, recognises it and installs nothing.

    venv = seed_closure(workdir)               # then run with remote.workdir=<workdir> and
    request = pod_python_request()             # image.base_python=<request> (the interpreter .venv-pod came from)
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from engine.closure import closure_hash
from tests.conftest import REPO

REQUIREMENTS = REPO / "remote_image" / "requirements.txt"


def _unavailable(message: str) -> None:
    """A skip on a machine without the pod's venv, a failure in CI (which builds it first)."""
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def pod_venv() -> Path:
    """The venv behind LORAPOD_POD_PYTHON (not resolved: bin/python links to the interpreter it came from)."""
    path = os.environ.get("LORAPOD_POD_PYTHON")
    if not path:
        _unavailable("LORAPOD_POD_PYTHON is unset: run .ci/pod_closure.sh, then set "
                     "LORAPOD_POD_PYTHON=$PWD/.venv-pod/bin/python")
    return Path(path).parent.parent


def pod_stamp() -> dict:
    stamp = pod_venv() / "lorapod-closure.json"
    if not stamp.is_file():
        _unavailable(f"{stamp} is missing: .venv-pod was built before install_closure.sh stamped it; "
                     "run .ci/pod_closure.sh again")
    return json.loads(stamp.read_text())


def pod_python_request() -> str:
    """The python request .venv-pod was made with: image.base_python for a run that should find it."""
    return pod_stamp()["python"]


def seed_closure(workdir: Path, python_request: str | None = None, requirements: Path = REQUIREMENTS) -> Path:
    """<workdir>/.lorapod/venvs/<hash> linked to .venv-pod, where probe looks for the closure of `requirements`
    made from `python_request` (default: the one .venv-pod was made with). Returns the link."""
    stamp = pod_stamp()
    request = python_request or stamp["python"]
    holds = (stamp["requirements_sha256"], stamp["python"])
    wanted = (hashlib.sha256(requirements.read_bytes()).hexdigest(), request)
    if holds != wanted:
        _unavailable(f"{pod_venv()} holds another closure ({holds[0][:12]}… for {holds[1]}) than "
                     f"{requirements} for {request}: run .ci/pod_closure.sh again")
    link = workdir / ".lorapod" / "venvs" / closure_hash(requirements, request)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(pod_venv(), target_is_directory=True)
    return link
