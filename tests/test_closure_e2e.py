"""image=runpod end to end against the RunPod emulator: no remote.python, so probe installs the closure
(image.requirements) on the pod with remote_image/install_closure.sh, from a real package index on 127.0.0.1.

The pod is the emulator's stand-in for RunPod's official image: its SSH sessions have sshd's default PATH and
no uv of the installer's pinned version (RunPod's image has one in /bin, of whatever version was `latest` when it
was built: official-templates/base/Dockerfile in runpod/containers), so the installer gets its uv with the pod's
python3 and pip, from the same index (the real uv wheel). The closure is two tiny wheels built here. No upload,
train or fetch: the probe is what is under test.

image.base_python is this machine's interpreter by path: the emulated pod is this machine, which has no
python3.12 on sshd's PATH. So the default request, "3.12" (uv finding /usr/bin/python3.12 on RunPod's image), is
not run here; tests/remote_image/test_install_closure.py runs version requests against interpreters it has.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.closure import closure_hash
from tests.closure_seed import REQUIREMENTS, pod_python_request, seed_closure
from tests.conftest import lorapod_env, run_lorapod
from tests.pyindex import PackageIndex, build_wheel, repack_installed
from tests.sshd import SESSION_PATH as SSHD_PATH  # what the pod's SSH sessions get

BASE_PYTHON = os.path.realpath(sys.executable)  # the Python the venv is made from (RunPod's image: 3.12)
PINS = "lorapod-tiny-a==1.0\nlorapod-tiny-b==2.0\n"


@pytest.fixture
def index(tmp_path):
    if shutil.which("uv", path=SSHD_PATH):
        pytest.skip("this machine has a uv on sshd's default PATH: the pip route to the pinned uv cannot be played")
    if subprocess.run(["python3", "-m", "pip", "--version"], env={"PATH": SSHD_PATH}, capture_output=True).returncode:
        pytest.skip("this machine's python3 on sshd's default PATH has no pip (RunPod's image has one)")
    index = PackageIndex(tmp_path / "wheels")
    index.add(build_wheel(index.folder, "lorapod-tiny-a", "1.0"))
    index.add(build_wheel(index.folder, "lorapod-tiny-b", "2.0", requires=("lorapod-tiny-a==1.0",)))
    index.add(repack_installed("uv", index.folder))
    with index.serving() as url:
        index.url = url
        yield index


def closure_run(emu, index, workdir: Path, requirements: Path, run_dir: Path, base_python: str = BASE_PYTHON,
                *extra: str):
    return run_lorapod("gpu=rtx5090", "image=runpod", "build.skip=true", f"provider.api_url={emu.url}",
                       f"remote.workdir={workdir}", f"image.requirements={requirements}",
                       f"image.index_url={index.url}", f"image.base_python={base_python}",
                       "~pipeline.stages.upload", "~pipeline.stages.train", "~pipeline.stages.fetch", *extra,
                       run_dir=run_dir, env=lorapod_env(RUNPOD_API_KEY=emu.api_key))


def assert_pod_deleted(emu) -> None:
    assert emu.pods and emu.live_pods() == [], [p.id for p in emu.live_pods()]


def closure_lines(run_dir: Path) -> list[str]:
    return [line.split("| ", 3)[-1] for line in (run_dir / "run.log").read_text().splitlines()
            if "lorapod-closure: " in line]


def test_probe_installs_the_closure_once_per_volume_with_the_watchdog_armed_first(runpod_emulator, index, tmp_path):
    emu, workdir = runpod_emulator, tmp_path / "volume"
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(PINS)
    run = closure_run(emu, index, workdir, requirements, tmp_path / "run1")
    assert run.proc.returncode == 0, run.output
    assert run.summary["status"] == "succeeded" and run.summary["pod"]["terminated"] is True
    [pod] = emu.pods.values()
    assert pod.request["image"].startswith("docker.io/runpod/pytorch:")

    venv = workdir / ".lorapod" / "venvs" / closure_hash(requirements, BASE_PYTHON)
    closure = run.state["outputs"]["closure"]
    assert closure["venv"] == str(venv) and closure["hash"] == venv.name and closure["installed"] is True
    assert json.loads((venv / "lorapod-closure.json").read_text())["python"] == BASE_PYTHON
    check = subprocess.run([str(venv / "bin" / "python"), "-c", "import lorapod_tiny_b; print(lorapod_tiny_b.VERSION)"],
                           capture_output=True, text=True)
    assert check.stdout.strip() == "2.0", check.stderr
    assert "/simple/uv/" in index.requests  # the pod had no uv: its python3's pip fetched the pinned one

    log = (tmp_path / "run1" / "run.log").read_text()
    lines = closure_lines(tmp_path / "run1")
    assert any(line.startswith("lorapod-closure: installing uv ") for line in lines), lines
    assert any(line.startswith("lorapod-closure: installing 2 packages from") for line in lines), lines
    assert any("uv: Installed 2 packages" in line for line in lines), lines
    assert lines[-1].startswith(f"lorapod-closure: installed 2 packages into {venv} in "), lines
    # The pod was protected before the install began: the watchdog, run by the image's python3, was armed.
    assert run.state["outputs"]["deadline"]["armed"] is True
    assert log.index("pod deadline armed") < log.index("lorapod-closure: ")
    assert "pod ready: python 3." in log and f"at {venv}/bin/python" in log
    assert_pod_deleted(emu)

    # The next run on the same volume finds the venv ready: nothing installed, no index asked.
    index.requests[:] = []
    again = closure_run(emu, index, workdir, requirements, tmp_path / "run2")
    assert again.proc.returncode == 0, again.output
    assert again.state["outputs"]["closure"]["installed"] is False
    assert [line.split(": ", 1)[1] for line in closure_lines(tmp_path / "run2")] == [
        f"nothing to install: {venv} already holds this closure (2 packages, Python {BASE_PYTHON})"]
    assert index.requests == []
    assert len(emu.pods) == 2
    assert_pod_deleted(emu)


def test_an_install_that_fails_deletes_the_pod_and_says_what_failed(runpod_emulator, index, tmp_path):
    emu, workdir = runpod_emulator, tmp_path / "volume"
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(PINS + "lorapod-nowhere==9.9\n")
    run = closure_run(emu, index, workdir, requirements, tmp_path / "run")
    assert run.proc.returncode == 1, run.output
    summary = run.summary
    assert summary["failed_stage"] == "probe" and summary["pod"]["terminated"] is True
    assert "installing the training closure on the pod failed" in summary["error"]
    assert "uv pip install of" in summary["error"] and "lorapod-nowhere" in summary["error"]
    venv = workdir / ".lorapod" / "venvs" / closure_hash(requirements, BASE_PYTHON)
    assert not venv.exists()
    assert run.state["outputs"]["closure"]["installed"] is False
    assert_pod_deleted(emu)


def test_an_install_that_hangs_is_stopped_at_its_limit_and_the_pod_deleted(runpod_emulator, index, tmp_path):
    """A download that never finishes: the heartbeat keeps the watchdog satisfied, so only the install's own
    limit (image.install_timeout_s) stands between it and hours of billing."""
    emu, workdir = runpod_emulator, tmp_path / "volume"
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(PINS)
    index.hold()  # the wheels never come
    try:
        run = closure_run(emu, index, workdir, requirements, tmp_path / "run", BASE_PYTHON,
                          "image.install_timeout_s=20")
    finally:
        index.release()
    assert run.proc.returncode == 1, run.output
    assert run.summary["failed_stage"] == "probe" and run.summary["pod"]["terminated"] is True
    assert "not finished within image.install_timeout_s (20s)" in run.summary["error"], run.summary["error"]
    venv = workdir / ".lorapod" / "venvs" / closure_hash(requirements, BASE_PYTHON)
    assert not venv.exists()  # timeout(1) signalled the installer, whose trap removed the partial venv
    assert_pod_deleted(emu)


def test_a_volume_that_holds_the_pods_closure_is_used_as_it_is(runpod_emulator, tmp_path):
    """The real closure (remote_image/requirements.txt), as a network volume holds it after a first run:
    tests/closure_seed.py links the workdir's venv to .venv-pod, and probe installs nothing."""
    emu, workdir = runpod_emulator, tmp_path / "volume"
    request = pod_python_request()
    link = seed_closure(workdir, request)
    empty = PackageIndex(tmp_path / "no-wheels")
    with empty.serving() as url:
        empty.url = url
        run = closure_run(emu, empty, workdir, REQUIREMENTS, tmp_path / "run", base_python=request)
    assert run.proc.returncode == 0, run.output
    assert run.state["outputs"]["closure"] == {**run.state["outputs"]["closure"], "venv": str(link),
                                               "installed": False}
    assert empty.requests == []
    log = (tmp_path / "run" / "run.log").read_text()
    assert f"nothing to install: {link} already holds this closure" in log
    assert "pod ready: python 3.12" in log and f"at {link}/bin/python" in log
    assert_pod_deleted(emu)
