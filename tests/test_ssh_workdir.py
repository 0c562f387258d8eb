"""provider=ssh's workdir over a real sshd: by default under the remote user's home, and refused before anything
is made or uploaded when others could write to it or above it."""
from __future__ import annotations

import pwd
import secrets
import shutil
from pathlib import Path

from tests.conftest import run_lorapod
from tests.test_ssh_provider import ssh_args


def without_workdir(args: list[str]) -> list[str]:
    return [a for a in args if not a.startswith("remote.workdir=")]


def test_a_workdir_under_the_remote_home_runs_in_the_folder_that_was_checked(plain_sshd, tmp_path, run_dir):
    # `~/<name>` is resolved on the machine, as the default ($HOME/lorapod, tests/engine/test_remote_folder.py) is;
    # a unique name keeps the test off whatever the real home already holds.
    home = Path(pwd.getpwnam(plain_sshd.user).pw_dir)
    name = f"lorapod-test-{secrets.token_hex(4)}"
    args = without_workdir(ssh_args(plain_sshd, tmp_path)) + [f"remote.workdir='~/{name}'"]
    try:
        run = run_lorapod(*args, run_dir=run_dir)
        assert run.proc.returncode == 0, run.output[-3000:]
        assert run.state["outputs"]["workdir"] == str(home / name)
        assert (home / name / f"lorapod-{run.summary['run_id']}" / "train.log").is_file(), "training ran there"
        assert not (home / "~").exists(), "not in a folder literally named ~"
        assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    finally:
        shutil.rmtree(home / name, ignore_errors=True)


def test_a_workdir_under_a_world_writable_folder_is_refused_before_anything_is_sent(plain_sshd, tmp_path, run_dir):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    args = without_workdir(ssh_args(plain_sshd, tmp_path)) + [f"remote.workdir={shared / 'lorapod'}"]
    run = run_lorapod(*args, run_dir=run_dir)
    assert run.proc.returncode == 1
    assert run.summary["failed_stage"] == "probe"
    assert f"unsafe workdir {shared / 'lorapod'}" in run.output and "(remote.workdir)" in run.output
    assert f"would be made in {shared}, which others can write to (mode 777)" in run.output
    assert "set remote.workdir to a folder only you can write to" in run.output
    assert list(shared.iterdir()) == [], "nothing was made or uploaded there"
    assert run.summary["stages"].get("upload", {}).get("status") != "succeeded"
    assert (run_dir / "dataset" / "train.jsonl").is_file()


def test_an_existing_workdir_in_a_world_writable_provider_workdir_is_refused(plain_sshd, tmp_path, run_dir):
    shared = tmp_path / "shared"
    (shared / "lorapod").mkdir(parents=True)
    shared.chmod(0o777)
    args = without_workdir(ssh_args(plain_sshd, tmp_path)) + [f"provider.workdir={shared / 'lorapod'}"]
    run = run_lorapod(*args, run_dir=run_dir)
    assert run.proc.returncode == 1 and "(provider.workdir)" in run.output
    assert f"{shared} is writable by others (mode 777)" in run.output
    assert list((shared / "lorapod").iterdir()) == []


def test_an_explicit_private_workdir_still_works(plain_sshd, tmp_path, run_dir):
    tmp_path.chmod(0o700)
    run = run_lorapod(*ssh_args(plain_sshd, tmp_path), run_dir=run_dir)
    assert run.proc.returncode == 0, run.output[-3000:]
    assert run.state["outputs"]["workdir"] == str(tmp_path / "box")
    assert (tmp_path / "box" / f"lorapod-{run.summary['run_id']}" / "train.log").is_file()
