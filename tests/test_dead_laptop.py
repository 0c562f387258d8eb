"""A dead laptop never leaves a pod billing: run.py is SIGKILLed (nothing of ours runs terminate) and the pod's
own watchdog must delete it, with the pod's key, for each image kind and each pod-key power where some way
works. Against the RunPod emulator, whose pods are containers: the entrypoint is PID 1 and holds RunPod's
variables, SSH sessions start with a fresh environment, and what a pod key may do is a setting.

When no way works, the run says so before training and run-summary.json records the deadline as not armed.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import Background, fake_key, run_lorapod, wait_for
from tests.test_runpod_e2e import LORAPOD, assert_nothing_billing_and_data_kept, canonical, env_for, reap

HEARTBEAT_TIMEOUT_S = 10  # short for a test, long enough for a busy CI machine to keep beating
MARGIN_S = 45  # the watchdog's poll, its requests and a busy CI machine; never a measured duration
GUARDED = (f"provider.heartbeat_timeout_s={HEARTBEAT_TIMEOUT_S}", "provider.heartbeat_interval_s=1",
           "provider.watchdog_poll_s=0.2")
# Where the copy lorapod starts over SSH finds the pod key: sshd as PID 1 (start.sh) has overwritten
# /proc/1/environ, so only the file start.sh saved helps; a shell PID 1 keeps its environment.
CREDENTIAL = {"lorapod": "/run/lorapod/credentials", "runpod": "/proc/1/environ"}
# Published images: nothing starts the watchdog from boot. RunPod's official image keeps a shell as PID 1 (its
# variables readable in /proc/1/environ); of Unsloth's the emulator takes the harsher reading, sshd as PID 1.
# (canonical() sets remote.python, so no closure is installed at probe.)
IMAGES = {"lorapod": LORAPOD, "runpod": (), "unsloth": ("image=unsloth",)}
# Where each image reads the login key (image.ssh_key_env): Unsloth's reads SSH_KEY before PUBLIC_KEY.
KEY_VARIABLES = {"lorapod": ("PUBLIC_KEY", "SSH_PUBLIC_KEY"), "unsloth": ("SSH_KEY", "PUBLIC_KEY", "SSH_PUBLIC_KEY")}


@pytest.fixture
def workdir(tmp_path) -> Path:
    return tmp_path / "pod-disk"


def args(emu, workdir: Path, image: str, *extra: str) -> list[str]:
    return [*canonical(emu, workdir, *GUARDED, *extra), *IMAGES[image]]


def state(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def deletions(emu) -> list:
    """The requests that deleted or terminated a pod: REST DELETE, the terminate action, GraphQL podTerminate."""
    found = []
    for r in emu.requests:
        if r.status is None or r.status >= 300:
            continue
        body = r.body if isinstance(r.body, dict) else {}
        if (r.method == "DELETE" and r.template == "/v2/pods/{id}"
                or r.template == "/v2/pods/{id}/action" and body.get("action") == "terminate"
                or r.template == "/graphql" and "podTerminate" in str(body.get("query"))
                and not (r.response or {}).get("errors")):
            found.append(r)
    return found


def assert_the_pod_deleted_itself(emu, run_dir: Path, way: str) -> None:
    # The request is recorded just after the pod is marked TERMINATED: wait for both.
    wait_for(lambda: not emu.live_pods() and deletions(emu), HEARTBEAT_TIMEOUT_S + MARGIN_S,
             "the pod's watchdog to delete it")
    done = [(r.method, r.template, r.key) for r in deletions(emu)]
    assert done[0] == (*WAYS[way], "pod") and all(key == "pod" for *_, key in done), done
    assert (run_dir / "dataset" / "train.jsonl").is_file()


# The first way the pod key may use in each mode (the watchdog tries REST DELETE, the action, then GraphQL).
MODES = {"rest": "rest-delete", "action": "rest-action", "graphql": "graphql"}
WAYS = {"rest-delete": ("DELETE", "/v2/pods/{id}"), "rest-action": ("POST", "/v2/pods/{id}/action"),
        "graphql": ("POST", "/graphql")}


@pytest.mark.parametrize("image, pod_key", [
    ("lorapod", "rest"), ("lorapod", "action"), ("lorapod", "graphql"), ("runpod", "graphql"), ("runpod", "action"),
])
def test_killed_mid_training(runpod_emulator, workdir, run_dir, image, pod_key):
    emu = runpod_emulator
    emu.pod_key = pod_key
    with Background(*args(emu, workdir, image, "train.max_steps=100000", "train.logging_steps=20"),
                    run_dir=run_dir, env=env_for(emu)) as bg:
        bg.wait_for_training()
        deadline = state(run_dir)["outputs"]["deadline"]
        assert deadline["armed"] is True and CREDENTIAL[image] in deadline["credential"], deadline
        bg.proc.kill()
    assert_the_pod_deleted_itself(emu, run_dir, MODES[pod_key])


@pytest.mark.parametrize("image, pod_key", [("lorapod", "graphql"), ("runpod", "rest")])
def test_killed_during_fetch(runpod_emulator, workdir, run_dir, image, pod_key):
    """The pod's connection hangs as fetch starts (lorapod waits on it); then the laptop dies."""
    emu = runpod_emulator
    emu.pod_key = pod_key
    with Background(*args(emu, workdir, image, "train.max_steps=3"), run_dir=run_dir, env=env_for(emu)) as bg:
        wait_for(lambda: emu.pods, 60, "the pod")
        [pod_id] = emu.pods
        trigger = emu.cut_connections_when(
            pod_id, lambda: state(run_dir).get("stages", {}).get("fetch", {}).get("status") == "running", "hang")
        wait_for(trigger.fired.is_set, 240, "fetch to start")
        bg.proc.kill()
    assert_the_pod_deleted_itself(emu, run_dir, MODES[pod_key])
    assert (run_dir / "train.log").is_file(), "the training log came home as it ran"


def test_killed_before_probe_the_boot_watchdog_deletes_the_pod(runpod_emulator, workdir, run_dir):
    """lorapod's image starts the watchdog from boot: a heartbeat that never starts counts as stale."""
    emu = runpod_emulator
    emu.ports_after_running_s = 600  # the pod runs but never gets its SSH port: lorapod waits in probe
    with Background(*args(emu, workdir, "lorapod"), run_dir=run_dir, env=env_for(emu)) as bg:
        wait_for(lambda: emu.pods and next(iter(emu.pods.values())).status == "RUNNING", 60, "a running pod")
        bg.proc.kill()
    assert_the_pod_deleted_itself(emu, run_dir, "graphql")
    [pod] = emu.pods.values()
    assert "no heartbeat" in pod.log.text()


def test_killed_before_probe_a_published_image_has_no_guard_yet_and_reap_finds_it(runpod_emulator, workdir,
                                                                                   tmp_path):
    """The window the README's table names: nothing runs on a published image before lorapod connects, so
    only `python -m engine.reap` (which knows the run by its folder) deletes the pod."""
    emu = runpod_emulator
    emu.ports_after_running_s = 600
    runs = tmp_path / "runs"
    run_dir = runs / "killed"
    with Background(*args(emu, workdir, "runpod"), run_dir=run_dir, env=env_for(emu)) as bg:
        wait_for(lambda: state(run_dir).get("pod"), 60, "the pod in state.json")
        bg.proc.kill()
    time.sleep(HEARTBEAT_TIMEOUT_S * 2)
    assert len(emu.live_pods()) == 1 and deletions(emu) == []
    done = reap(emu, runs, "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert emu.live_pods() == [] and (run_dir / "dataset" / "train.jsonl").is_file()


@pytest.mark.parametrize("image, pod_key, why", [
    ("lorapod", "none", "403"),  # a pod key that may do nothing
    ("unsloth", "graphql", "no key"),  # sshd as PID 1 and no file saved: no pod key to be found
])
def test_a_deadline_that_cannot_work_is_reported_not_armed(runpod_emulator, workdir, run_dir, image, pod_key, why):
    emu = runpod_emulator
    emu.pod_key = pod_key
    run = run_lorapod(*args(emu, workdir, image, "train.max_steps=3"), run_dir=run_dir, env=env_for(emu))
    assert run.proc.returncode == 0, run.output
    [pod] = emu.pods.values()
    public_key = (run_dir / "ssh" / "id_ed25519.pub").read_text().strip()
    assert all(pod.request["env"][name] == public_key for name in KEY_VARIABLES[image]), pod.request["env"].keys()
    deadline = run.summary["deadline"]
    assert deadline["armed"] is False and why in deadline["reason"], deadline
    assert "THE POD'S DEADLINE IS NOT ARMED" in run.output and "provider.watchdog_api_key_env" in run.output
    assert run.output.index("NOT ARMED") < run.output.index("training started")
    assert_nothing_billing_and_data_kept(emu, run)


def test_require_deadline_stops_before_training_when_not_armed(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    emu.pod_key = "none"
    run = run_lorapod(*args(emu, workdir, "lorapod", "provider.require_deadline=true"), run_dir=run_dir,
                      env=env_for(emu))
    assert run.proc.returncode == 1
    assert run.summary["failed_stage"] == "probe" and "require_deadline" in run.summary["error"]
    assert "train" not in run.summary["stages"] or run.summary["stages"]["train"]["status"] != "succeeded"
    assert not (workdir / f"lorapod-{run.summary['run_id']}" / "train.log").exists()
    assert_nothing_billing_and_data_kept(emu, run)


@pytest.mark.parametrize("image", ["lorapod", "unsloth"])
def test_your_own_watchdog_key_arms_it_when_the_pod_key_cannot(runpod_emulator, workdir, run_dir, image):
    """lorapod: a pod key that may do nothing. unsloth: no pod key to be found, only the pod id lorapod passes."""
    emu = runpod_emulator
    emu.pod_key = "none"
    mine = fake_key("watchdogonly")
    emu.add_key(mine, methods=("GET", "DELETE"))
    with Background(*args(emu, workdir, image, "train.max_steps=100000", "train.logging_steps=20",
                          "provider.watchdog_api_key_env=MY_WATCHDOG_KEY"),
                    run_dir=run_dir, env=env_for(emu, MY_WATCHDOG_KEY=mine)) as bg:
        bg.wait_for_training()
        deadline = state(run_dir)["outputs"]["deadline"]
        assert deadline["armed"] is True and "your watchdog key" in deadline["credential"]
        bg.proc.kill()
    wait_for(lambda: not emu.live_pods() and deletions(emu), HEARTBEAT_TIMEOUT_S + MARGIN_S,
             "the watchdog to delete the pod")
    done = deletions(emu)
    assert done and all(r.key == "extra" for r in done)
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert mine not in path.read_text(errors="ignore"), path
    [pod] = emu.pods.values()
    assert mine not in pod.log.text()
