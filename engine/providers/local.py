"""provider=local: this machine plays the pod. Its "disk" is <run_dir>/pod, its python this interpreter.

Terminating it stops every process a stage started there (training runs detached in its own session, as
on a real pod) and keeps the folder: nothing in the run directory is ever deleted.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

from loguru import logger

from engine.context import RunContext
from engine.providers.base import Endpoint, Pod, PodSpec


class LocalProvider:
    name = "local"

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.default_workdir = str(ctx.run_dir / "pod")
        self.default_python = sys.executable
        self.default_cache_dir = None  # this machine: training uses your own caches, as anything you run does
        self.secrets_dir = None  # <remote dir>/secrets, deleted at fetch or when the run ends

    @staticmethod
    def check_config(cfg) -> list[tuple[str, str]]:
        python = cfg.remote.python
        if python and not shutil.which(python):
            return [("remote.python", f"{python!r} is not an executable on this machine, which is the pod "
                                      "for provider=local (null uses this interpreter)")]
        return []

    def create(self, spec: PodSpec) -> Pod:
        root = Path(self.ctx.cfg.remote.workdir or self.default_workdir)
        root.mkdir(parents=True, exist_ok=True)
        return Pod(id=f"local-{self.ctx.run_id}", name=spec.name, provider=self.name, gpu="cpu", workdir=str(root))

    def wait_ready(self, pod: Pod) -> Endpoint:
        return Endpoint(kind="local")

    def terminate(self, pod: Pod) -> None:
        for pid_file in Path(pod.workdir).glob(f"{pod.name}/*.pid"):
            _stop_group(pid_file)

    def list_owned(self) -> list[Pod]:
        return []


def _stop_group(pid_file: Path, grace_s: float = 5.0) -> None:
    try:
        pgid = int(pid_file.read_text().strip())
        os.killpg(pgid, signal.SIGTERM)
    except (ValueError, ProcessLookupError, PermissionError, FileNotFoundError):
        return  # already gone: nothing left running
    logger.info(f"stopping process group {pgid} ({pid_file.name})")
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(pgid, signal.SIGKILL)
