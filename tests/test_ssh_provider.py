"""provider=ssh against a plain sshd: the same probe, upload, train and fetch, and nothing rented or deleted."""
from __future__ import annotations

import json

from engine.sshkeys import run_keypair
from tests.conftest import PYTHON, run_lorapod


def ssh_args(sshd, tmp_path, key=None, known_hosts=None) -> list[str]:
    known = known_hosts or tmp_path / "empty_known_hosts"
    known.touch()
    return ["provider=ssh", f"provider.host={sshd.host}", f"provider.port={sshd.port}", f"provider.user={sshd.user}",
            f"provider.key_path={key or sshd.key}", f"provider.known_hosts={known}",
            f"remote.workdir={tmp_path / 'box'}", f"remote.python={PYTHON}", "train.max_steps=3"]


def test_trains_on_a_machine_you_already_have(plain_sshd, tmp_path, run_dir):
    run = run_lorapod(*ssh_args(plain_sshd, tmp_path), run_dir=run_dir)
    assert run.proc.returncode == 0, run.output
    assert run.summary["status"] == "succeeded"
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((run_dir / "result.json").read_text())["steps"] == 3
    assert "nothing to rent" in run.output
    assert plain_sshd.machine.up, "terminate leaves your machine alone"
    pinned = (run_dir / "ssh" / "known_hosts").read_text()
    assert f"[127.0.0.1]:{plain_sshd.port}" in pinned, "pinned at first contact"


def test_a_key_the_machine_does_not_accept_is_named(plain_sshd, tmp_path, run_dir):
    wrong, _ = run_keypair(tmp_path / "wrong-key", "not-authorized")
    run = run_lorapod(*ssh_args(plain_sshd, tmp_path, key=wrong), run_dir=run_dir)
    assert run.proc.returncode == 1
    assert run.summary["failed_stage"] == "probe"
    assert f"refused the SSH key {wrong}" in run.output
    assert (run_dir / "dataset" / "train.jsonl").is_file()


def test_a_host_key_that_changed_is_refused(plain_sshd, tmp_path, run_dir):
    _, impostor = run_keypair(tmp_path / "impostor", "impostor")
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{plain_sshd.port} {' '.join(impostor.split()[:2])}\n")
    run = run_lorapod(*ssh_args(plain_sshd, tmp_path, known_hosts=known), run_dir=run_dir)
    assert run.proc.returncode == 1
    assert "host key for" in run.output and "changed since first contact" in run.output
    assert not (tmp_path / "box").exists(), "nothing was sent to the impostor"
