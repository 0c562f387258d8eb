"""How the pod's host key came to be trusted, against the RunPod emulator: pinned from the key lines its start
script prints, or — when the image was expected to print them (image.logs_host_keys) and did not — at first
contact, said as a warning in run.log and recorded in run-summary.json. Over provider=ssh: the machine's
known_hosts, or first contact."""
from __future__ import annotations

from tests.conftest import run_lorapod
from tests.test_runpod_e2e import assert_nothing_billing_and_data_kept, canonical, env_for
from tests.test_ssh_provider import ssh_args

FELL_BACK = "expected the image to name its SSH host keys in the pod's log (image.logs_host_keys) but found none"


def test_keys_the_pods_log_announces_are_pinned_and_recorded(runpod_emulator, tmp_path, run_dir):
    emu = runpod_emulator
    run = run_lorapod(*canonical(emu, tmp_path / "pod-disk", "train.max_steps=2"), run_dir=run_dir, env=env_for(emu))
    assert run.proc.returncode == 0, run.output[-3000:]
    [pod] = emu.pods.values()
    assert "SSH host keys:" in pod.log.text()
    assert run.summary["host_key"] == "pinned_from_log" and run.summary["host_key_warning"] is None
    assert FELL_BACK not in (run_dir / "run.log").read_text()
    assert_nothing_billing_and_data_kept(emu, run)


def test_an_image_that_names_no_host_key_though_expected_to_is_a_warning_and_first_contact(
        runpod_emulator, tmp_path, run_dir):
    """image=unsloth: an image the emulator runs with sshd as PID 1, which prints no host key (the harsher reading
    of what RunPod documents for it), here configured as if it did."""
    emu = runpod_emulator
    run = run_lorapod(*canonical(emu, tmp_path / "pod-disk", "image=unsloth", "image.logs_host_keys=true",
                                 "train.max_steps=2"), run_dir=run_dir, env=env_for(emu))
    assert run.proc.returncode == 0, run.output[-3000:]
    [pod] = emu.pods.values()
    assert "SSH host keys:" not in pod.log.text() and "lorapod-host-key:" not in pod.log.text()
    warnings = [line for line in (run_dir / "run.log").read_text().splitlines() if FELL_BACK in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0] and "named no host key within" in warnings[0]
    assert run.summary["host_key"] == "first_contact"
    assert "named no host key within" in run.summary["host_key_warning"]
    assert (run_dir / "ssh" / "known_hosts").read_text().strip(), "pinned at first contact for later connections"
    assert_nothing_billing_and_data_kept(emu, run)


def test_provider_ssh_records_first_contact_or_a_known_hosts_file(plain_sshd, tmp_path, run_dir):
    run = run_lorapod(*ssh_args(plain_sshd, tmp_path), run_dir=run_dir)
    assert run.proc.returncode == 0, run.output[-3000:]
    assert run.summary["host_key"] == "first_contact" and run.summary["host_key_warning"] is None
    known = tmp_path / "known_hosts"
    known.write_text((run_dir / "ssh" / "known_hosts").read_text())
    again = run_lorapod(*ssh_args(plain_sshd, tmp_path, known_hosts=known), run_dir=tmp_path / "run2")
    assert again.proc.returncode == 0, again.output[-3000:]
    assert again.summary["host_key"] == "known_hosts"
