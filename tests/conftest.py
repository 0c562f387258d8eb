"""Shared helpers: run lorapod as a user would (a subprocess of run.py) and read what it left behind."""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.emulator.fixtures import runpod_emulator  # noqa: F401  (the RunPod emulator, for every test)

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# A GPU option brings training presets sized for its GPU (conf/gpu/*.yaml: ~32 examples a step, an event every
# 10 steps). A test that runs gpu=rtx5090 trains the tiny model on this machine's CPU: it asks for what
# train/default.yaml gives gpu=cpu, so its steps stay fast and every step reports.
CPU_TRAIN = ("train.batch_size=4", "train.grad_accum=1", "train.logging_steps=1")


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


def fake_key(tag: str) -> str:
    """A made-up string shaped like a RunPod key (rpa_ + letters and digits), built here so that no
    key-shaped literal sits in the repository for secret scanners to flag."""
    return "rpa" + "_" + tag.upper() + "0" * 24


def fake_hf_token(tag: str) -> str:
    """A made-up string shaped like a Hugging Face token (hf_ + 34 letters), built here for the same reason."""
    return "hf" + "_" + (tag.capitalize() + "Q" * 34)[:34]


def lorapod_env(**extra: str) -> dict:
    # Your own keys and tokens stay out of the tests: a test that wants one says so.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RUNPOD_", "HYDRA_")) and k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(extra)
    return env


_scratch: list[tempfile.TemporaryDirectory] = []


def with_registry(args: tuple[str, ...], run_dir: Path | None) -> list[str]:
    """The args plus a registry.path of the test's own (beside its run folder), unless the test chose one: a test
    never registers into the project's adapters/. And a plan.runs_dir of its own: the plan reads measured
    throughput from finished runs there, so with the project's runs/ a test's plan would depend on what this
    machine ran before."""
    at = next((i for i, a in enumerate(args) if "=" in a and not a.startswith("-")), len(args))
    if not any(a.lstrip("+~").startswith(("plan.runs_dir=", "plan=")) for a in args):
        runs = Path(run_dir).parent / "plan-runs" if run_dir is not None else Path(tempfile.gettempdir()) / \
            "lorapod-test-no-runs"  # never written: nothing there to measure
        args = (*args[:at], f"plan.runs_dir={runs}", *args[at:])
    if any(a.lstrip("+~").startswith("registry.path=") or a.startswith("registry=") for a in args):
        return list(args)
    if run_dir is not None:
        folder = Path(run_dir).parent / "adapters"
    else:  # a run without a folder of its own (--cfg job): a scratch registry, gone when the tests end
        if not _scratch:
            _scratch.append(tempfile.TemporaryDirectory(prefix="lorapod-test-registry-"))
        folder = Path(_scratch[0].name)
    # Beside the other overrides: run.py's parser takes them as one run of words, not split by an option
    # (`--cfg job`, `--config-path DIR`).
    at = next((i for i, a in enumerate(args) if "=" in a and not a.startswith("-")), len(args))
    return [*args[:at], f"registry.path={folder}", *args[at:]]


def run_lorapod(*args: str, run_dir: Path | None = None, env: dict | None = None, timeout: float = 600) -> Run:
    cmd = [PYTHON, str(REPO / "run.py"), *with_registry(args, run_dir)]
    if run_dir is not None:
        cmd.append(f"hydra.run.dir={run_dir}")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env or lorapod_env(), timeout=timeout)
    return Run(proc, run_dir)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class Background:
    """run.py running while the test acts on it (signals, injected faults); killed if the test fails first."""

    def __init__(self, *args: str, run_dir: Path, env: dict | None = None):
        self.run_dir = run_dir
        self.cmd = [PYTHON, str(REPO / "run.py"), *with_registry(args, run_dir), f"hydra.run.dir={run_dir}"]
        self.proc = subprocess.Popen(self.cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env or lorapod_env())

    def wait_for_training(self, timeout: float = 240) -> None:
        log = self.run_dir / "train.log"  # the home copy, written as lines arrive
        wait_for(lambda: log.exists() and '"event": "step"' in log.read_text(errors="ignore"), timeout,
                 "the first training step")

    def finish(self, timeout: float = 600) -> Run:
        out, _ = self.proc.communicate(timeout=timeout)
        return Run(subprocess.CompletedProcess(self.cmd, self.proc.returncode, out, ""), self.run_dir)

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


DEFAULT_RUN_KEY = fake_key("testsecret")


@pytest.fixture(scope="session")
def default_run(tmp_path_factory) -> Run:
    """`python run.py` as it comes, with a RunPod key in the environment that must leak nowhere: trained once
    per test session for every test that only reads what it left. pytest-xdist gives each worker its own
    session fixtures, so the first worker to get here trains it, under a lock in the folder all workers of this
    session share, and the others read what it left."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # pytest-N/, above each worker's popen-gwK/
    folder = shared / "default-run"
    with open(shared / "default-run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "proc.json").exists():
            run = run_lorapod(run_dir=folder / "run", env=lorapod_env(RUNPOD_API_KEY=DEFAULT_RUN_KEY))
            (folder / "proc.json").write_text(json.dumps(
                {"args": run.proc.args, "returncode": run.proc.returncode, "stdout": run.proc.stdout,
                 "stderr": run.proc.stderr}))
    proc = subprocess.CompletedProcess(**json.loads((folder / "proc.json").read_text()))
    return Run(proc, folder / "run")


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


@pytest.fixture
def plain_sshd(tmp_path):
    """A machine you already have: OpenSSH's sshd on 127.0.0.1 taking the key in `.key`. It is the emulator's
    container with the stand-in for RunPod's official image (tests/emulator/images/runpod_start.sh): sshd
    started from PUBLIC_KEY, sessions with sshd's fresh environment. Its folder is under $HOME because sshd's
    StrictModes refuses authorized_keys below a world-writable /tmp."""
    import getpass
    import shutil
    import tempfile
    from types import SimpleNamespace

    from engine.sshkeys import run_keypair
    from tests import sshd
    from tests.emulator.pod import ContainerLog, PodMachine

    if not sshd.installed():
        pytest.skip(sshd.MISSING)
    folder = Path(tempfile.mkdtemp(prefix="lorapod-sshd-", dir=Path.home()))
    key, public = run_keypair(tmp_path / "client-key", "lorapod-tests")
    log = ContainerLog()
    machine = PodMachine(folder / "machine", log, "runpod")
    machine.boot({"PATH": os.environ["PATH"], "PUBLIC_KEY": public})
    try:
        assert machine.up, f"{machine.failed}\n{log.text()}"
        yield SimpleNamespace(host="127.0.0.1", port=machine.sshd_port, user=getpass.getuser(), key=key,
                              machine=machine)
    finally:
        machine.kill()
        shutil.rmtree(folder, ignore_errors=True)
