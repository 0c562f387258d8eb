"""A pod is a container: its own PID namespace whose PID 1 is the image's entrypoint holding the container's
variables, SSH sessions with a fresh environment, its own /run, kept across a restart. Checked from inside, over
SSH, for each kind of image."""
from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import paramiko
import pytest
from tests.emulator.helpers import LORAPOD_IMAGE, RUNPOD_IMAGE, api, create, needs_root, run, \
    ssh
from tests.emulator.pod import IMAGES, image_kind

CONTAINER_VARIABLES = ("RUNPOD_POD_ID", "RUNPOD_API_KEY", "PUBLIC_KEY", "SSH_PUBLIC_KEY", "RUNPOD_TCP_PORT_22",
                       "HF_TOKEN")
UNSLOTH_IMAGE = "docker.io/unsloth/unsloth:studio"  # an image whose entrypoint nothing here documents
IMAGE_KINDS = [RUNPOD_IMAGE, LORAPOD_IMAGE, UNSLOTH_IMAGE]


def test_an_image_is_a_known_entrypoint_chosen_by_its_reference(runpod_emulator):
    assert image_kind("docker.io/lorapod/trainer:e2e") == image_kind("docker.io/you/lorapod-trainer@sha256:ab") \
        == "lorapod"
    # RunPod's own repositories, any tag: the stand-in for their start script, bash as PID 1.
    assert image_kind(RUNPOD_IMAGE) == image_kind("docker.io/runpod/base:0.6.2-cuda12.4.1") \
        == image_kind("runpod/pytorch@sha256:ab") == "runpod"
    # Anything else: sshd as PID 1, the harsher reading (runpod.md says "PID 1 keeps the variables" of
    # RunPod's official images only).
    assert image_kind(UNSLOTH_IMAGE) == image_kind("unsloth/unsloth:2025.10.1") == image_kind("x/y:z") \
        == image_kind("ghcr.io/runpod/pytorch:1") == image_kind("myrunpod/pytorch:1") == "sshd-pid1"
    assert image_kind("ghcr.io/me/trainer:1", {"ghcr.io/me/trainer:1": "lorapod"}) == "lorapod"
    assert IMAGES["lorapod"].name == "start.sh" and IMAGES["runpod"].name == IMAGES["sshd-pid1"].name \
        == "runpod_start.sh"
    emu = runpod_emulator
    emu.faults.never_ready = True
    emu.entrypoints["ghcr.io/me/trainer:1"] = "lorapod"  # a test may force the kind for a reference
    emu.entrypoints[UNSLOTH_IMAGE] = "runpod"
    assert emu.pod(create(emu, image="ghcr.io/me/trainer:1")["id"]).image_kind == "lorapod"
    assert emu.pod(create(emu, image=UNSLOTH_IMAGE)["id"]).image_kind == "runpod"
    assert emu.pod(create(emu, image="ghcr.io/me/other:1")["id"]).image_kind == "sshd-pid1"
    assert emu.pod(create(emu)["id"]).image_kind == "runpod"


def _environ(client, path: str = "/proc/1/environ") -> dict[str, str]:
    text = run(client, f"tr '\\0' '\\n' < {path}")
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


@needs_root
@pytest.mark.parametrize("image", IMAGE_KINDS)
def test_the_containers_variables_are_pid_1s_and_sessions_start_fresh(runpod_emulator, client_key, image):
    emu = runpod_emulator
    pkey, public = client_key
    env = {"PUBLIC_KEY": public, "SSH_PUBLIC_KEY": public, "HF_TOKEN": "hf_secret"}
    pod_id = create(emu, env=env, image=image)["id"]
    pod = emu.wait_ready(pod_id)
    client = ssh(emu, pod_id, pkey)

    # runpod.md: "A process started through an SSH session gets a fresh environment without them."
    session = dict(line.split("=", 1) for line in run(client, "env").splitlines() if "=" in line)
    assert not set(CONTAINER_VARIABLES) & set(session), session
    assert session["HOME"] == os.path.expanduser("~")  # root's own, from the passwd entry
    assert run(client, "wc -c < ~/.bashrc").strip() in ("0", ""), "the image's dotfiles: empty, not this machine's"

    pid_1 = run(client, "tr '\\0' ' ' < /proc/1/cmdline").strip()
    environ = _environ(client)
    if pod.image_kind == "runpod":
        # RunPod's start script stays PID 1 (`sleep infinity`): its environment is the container's.
        assert pid_1 == f"bash {IMAGES['runpod']}"
        assert (environ["RUNPOD_POD_ID"], environ["RUNPOD_API_KEY"], environ["HF_TOKEN"]) == (
            pod_id, pod.key, "hf_secret")
        assert environ["RUNPOD_TCP_PORT_22"] == str(pod.proxy.port) and environ["PUBLIC_KEY"] == public.strip()
    else:
        # lorapod's start.sh execs sshd, and an image nothing documents has sshd as PID 1 (the harsher
        # reading): sshd's process title overwrites what /proc/1/environ shows (runpod.md).
        assert pod.image_kind == ("lorapod" if image == LORAPOD_IMAGE else "sshd-pid1")
        assert pid_1.startswith("sshd: ") and "[listener]" in pid_1
        raw = run(client, "cat /proc/1/environ")
        assert "RUNPOD_POD_ID" not in raw and "RUNPOD_API_KEY" not in environ and pod.key not in raw
    for name in ("LORAPOD_API_URL", "LORAPOD_WATCHDOG_DIR", "LORAPOD_WATCHDOG_POLL_S"):
        assert name not in environ  # the emulator adds nothing of its own that lorapod could lean on

    # The pod's own PID namespace: `ps` shows its processes only, none of this machine's.
    seen = [line.split(None, 1) for line in run(client, "ps -eo pid=,comm=").splitlines()]
    names = {name.strip() for _, name in seen}
    assert int(seen[0][0]) == 1 and len(seen) < 12, seen
    assert names <= {"bash", "sleep", "sshd", "ps", "runpod_start.sh"}, names
    client.close()
    with api(emu) as client_api:
        assert client_api.delete(f"/pods/{pod_id}").status_code == 204


@needs_root
def test_an_image_nothing_documents_reads_ssh_key_first_and_only(runpod_emulator, client_key, tmp_path):
    # runpod.md: "Unsloth's image reads SSH_KEY, then PUBLIC_KEY": the harsher reading, the first one set wins.
    emu = runpod_emulator
    pkey, public = client_key
    by_ssh_key = emu.wait_ready(create(emu, env={"SSH_KEY": public}, image=UNSLOTH_IMAGE)["id"])
    run(ssh(emu, by_ssh_key.id, pkey), "true")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = (tmp_path / "other.pub").read_text().strip()  # the user's own key, say
    shadowed = emu.wait_ready(create(emu, public, env={"SSH_KEY": other}, image=UNSLOTH_IMAGE)["id"])
    assert shadowed.machine.authorized_keys.read_text() == other + "\n"  # not PUBLIC_KEY's
    with pytest.raises(paramiko.AuthenticationException):
        ssh(emu, shadowed.id, pkey)
    with api(emu) as client_api:
        for pod in (by_ssh_key, shadowed):
            assert client_api.delete(f"/pods/{pod.id}").status_code == 204


@needs_root
@pytest.mark.parametrize("image", IMAGE_KINDS)
def test_run_is_the_pods_own_and_survives_a_restart(runpod_emulator, client_key, image):
    # Docker puts no tmpfs on /run: it is the container's writable layer, which a restart keeps (container.sh).
    emu = runpod_emulator
    pkey, public = client_key
    pod, other = (emu.wait_ready(create(emu, public, image=each)["id"]) for each in (image, RUNPOD_IMAGE))
    name = f"/run/lorapod-test-{secrets.token_hex(4)}"
    one, two = ssh(emu, pod.id, pkey), ssh(emu, other.id, pkey)
    run(one, f"echo mine > {name} && test -d /run/sshd")
    assert run(one, f"cat {name}").strip() == "mine"
    assert run(two, f"test -e {name} || echo absent").strip() == "absent"  # pods do not share it
    assert not Path(name).exists()  # nor does it land in this machine's /run
    assert (pod.machine.run_dir / Path(name).name).read_text() == "mine\n"  # the pod's own folder
    modes = {}
    for line in run(one, "stat -c '%n %a %U' /run /run/sshd").splitlines():
        path, mode, owner = line.split()
        modes[path] = (int(mode, 8), owner)
    assert modes["/run"] == (0o755, "root")  # as an image's /run
    assert modes["/run/sshd"][1] == "root" and not modes["/run/sshd"][0] & 0o022  # what sshd demands of it
    for client in (one, two):
        client.close()
    before = set(pod.machine.processes())

    with api(emu) as client_api:
        restarted = client_api.post(f"/pods/{pod.id}/action", json={"action": "restart"})
        assert restarted.status_code == 200, restarted.text
        pod = emu.wait_ready(pod.id)  # it comes back up: sshd took the stale /run/sshd as it found it
        again = ssh(emu, pod.id, pkey)
        assert run(again, f"cat {name}").strip() == "mine"  # still there after the restart
        assert not before & set(pod.machine.processes())  # a new container all the same
        again.close()
        for each in (pod, other):
            assert client_api.delete(f"/pods/{each.id}").status_code == 204
