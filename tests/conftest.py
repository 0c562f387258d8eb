"""Shared helpers: run lorapod as a user would (a subprocess of run.py) and read what it left behind."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@dataclass
class Run:
    proc: subprocess.CompletedProcess
    run_dir: Path

    @property
    def output(self) -> str:
        return self.proc.stdout + self.proc.stderr

    @property
    def summary(self) -> dict:
        return json.loads((self.run_dir / "run-summary.json").read_text())

    @property
    def state(self) -> dict:
        return json.loads((self.run_dir / "state.json").read_text())

    def stage_status(self, name: str) -> str | None:
        return self.summary["stages"].get(name, {}).get("status")


def lorapod_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "HYDRA_"))}
    env.update(extra)
    return env


def run_lorapod(*args: str, run_dir: Path | None = None, env: dict | None = None, timeout: float = 600) -> Run:
    cmd = [PYTHON, str(REPO / "run.py"), *args]
    if run_dir is not None:
        cmd.append(f"hydra.run.dir={run_dir}")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env or lorapod_env(), timeout=timeout)
    return Run(proc, run_dir)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"
