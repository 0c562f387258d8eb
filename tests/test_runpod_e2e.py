"""`run.py gpu=rtx5090` end to end against the RunPod emulator: real HTTP, real sshd pods, real training.

Each test ends the same way: the emulator holds no pod that still bills, and the run folder keeps its
dataset and logs.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import CPU_TRAIN, PYTHON, REPO, Background, Run, fake_key, lorapod_env, run_lorapod, wait_for
from tests.emulator import CAPACITY_DETAILS
from tests.emulator.helpers import host_keys
from tests.emulator.pod import fingerprint
from tests.registry import loopback_registry

RTX5090, RTX4090 = "NVIDIA GeForce RTX 5090", "NVIDIA GeForce RTX 4090"


RUNPOD_IMAGE = "docker.io/runpod/pytorch:1.0.2-cu1281-torch280-ubuntu2404"  # the default, conf/image/runpod.yaml
# lorapod's own image, in a repository of the user's (the emulator runs start.sh for references naming lorapod).
LORAPOD_REPOSITORY = "docker.io/tester/lorapod-trainer"
LORAPOD = ("image=lorapod", f"image.repository={LORAPOD_REPOSITORY}", "image.tag=e2e")


def canonical(emu, workdir: Path, *extra: str) -> list[str]:
    """The issue's command: the GPU, where the API is, where the pod's disk is, its python (a set remote.python
    installs no closure at probe), and build.skip, which keeps it from asking a real registry."""
    return ["gpu=rtx5090", f"provider.api_url={emu.url}", f"remote.workdir={workdir}", f"remote.python={PYTHON}",
            "build.skip=true", *CPU_TRAIN, *extra]


def env_for(emu, **extra) -> dict:
    return lorapod_env(RUNPOD_API_KEY=emu.api_key, **extra)


def assert_nothing_billing_and_data_kept(emu, run: Run) -> None:
    deadline = time.monotonic() + 30
    while emu.live_pods() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert emu.live_pods() == [], [p.id for p in emu.live_pods()]
    assert (run.run_dir / "dataset" / "train.jsonl").is_file()
    assert (run.run_dir / "run.log").is_file() and (run.run_dir / "state.json").is_file()


@pytest.fixture
def workdir(tmp_path) -> Path:
    return tmp_path / "pod-disk"


def test_rents_trains_fetches_and_deletes(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    run = run_lorapod(*canonical(emu, workdir, "lora.r=16"), run_dir=run_dir, env=env_for(emu))
    assert run.proc.returncode == 0, run.output
    summary = run.summary
    assert summary["status"] == "succeeded" and summary["pod"]["terminated"] is True
    assert json.loads((run_dir / "adapter" / "adapter_config.json").read_text())["r"] == 16

    [pod] = emu.pods.values()
    sent = pod.request
    assert sent["name"] == f"lorapod-{summary['run_id']}"
    assert sent["image"] == RUNPOD_IMAGE and pod.image_kind == "runpod"
    assert summary["image"] == {"ref": RUNPOD_IMAGE, "digest": None, "checked": False}  # build.skip=true
    assert sent["gpu"] == {"id": RTX5090, "count": 1, "minCudaVersion": "12.8"}
    assert sent["cloud"] == "COMMUNITY" and sent["ports"] == ["22/tcp"]
    public_key = (run_dir / "ssh" / "id_ed25519.pub").read_text().strip()
    assert sent["env"]["PUBLIC_KEY"] == sent["env"]["SSH_PUBLIC_KEY"] == public_key
    assert int(sent["env"]["LORAPOD_MAX_RUNTIME_S"]) > 0 and sent["env"]["LORAPOD_HEARTBEAT_FILE"]
    # RunPod's start script names its host keys in the log (ssh-keygen -lf lines): the one pinned is among them,
    # read off the pod's disk here, not whatever answered first.
    assert "SSH host keys:" in pod.log.text() and "pinning at first contact" not in run.output
    [pinned] = (run_dir / "ssh" / "known_hosts").read_text().splitlines()
    on_disk = host_keys(emu, pod.id)
    kind, blob = pinned.split()[1:3]
    assert kind in on_disk and on_disk[kind] == fingerprint(f"{kind} {blob}")[1]
    # The watchdog was armed over SSH with the pod key from PID 1's environment (a shell there keeps it), and
    # the heartbeat exists.
    remote = workdir / f"lorapod-{summary['run_id']}"
    assert (remote / "watchdog.py").is_file() and (remote / "heartbeat").is_file()
    deadline = summary["deadline"]
    assert deadline["armed"] is True and "/proc/1/environ" in deadline["credential"], deadline
    assert summary["overhead"]["ready_to_train_excl_upload_s"] is not None
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert emu.api_key not in path.read_text(errors="ignore"), path
    assert emu.api_key not in run.output
    # registered (tests.conftest gives each run a registry beside its folder), the key nowhere in the record
    record = run_dir.parent / "adapters" / f"{summary['run_id']}.json"
    assert summary["adapter"]["status"] in ("active", "rejected") and emu.api_key not in record.read_text()
    assert_nothing_billing_and_data_kept(emu, run)


def test_your_own_image_is_created_by_digest_announces_its_host_key_and_saves_the_pod_key(
        runpod_emulator, workdir, run_dir):
    """image=lorapod: the build stage finds the tag in the (loopback) registry and the pod is created by the
    digest it answered with; start.sh announces the host key in the log and saves the pod key for the watchdog."""
    emu = runpod_emulator
    with loopback_registry() as registry:
        digest = registry.add("tester/lorapod-trainer", "e2e")
        args = [a for a in canonical(emu, workdir, *LORAPOD, "train.max_steps=3") if a != "build.skip=true"]
        run = run_lorapod(*args, f"build.registry_url={registry.url}", run_dir=run_dir, env=env_for(emu))
    assert run.proc.returncode == 0, run.output
    [pod] = emu.pods.values()
    assert pod.request["image"] == f"{LORAPOD_REPOSITORY}@{digest}" and pod.image_kind == "lorapod"
    assert run.summary["image"]["digest"] == digest and run.summary["image"]["tag"] == "e2e"
    public_key = (run_dir / "ssh" / "id_ed25519.pub").read_text().strip()
    assert pod.request["env"]["SSH_PUBLIC_KEY"] == public_key
    # The host key we pinned is the one the pod announced in its log, not just whatever answered.
    announced = re.findall(r"lorapod-host-key: (\S+) (SHA256:\S+)", pod.log.text())
    pinned = (run_dir / "ssh" / "known_hosts").read_text().split()
    assert announced and pinned[1] == announced[0][0]
    # The watchdog was armed over SSH, with the key start.sh saved (the emulator's default pod key may only
    # use GraphQL).
    deadline = run.summary["deadline"]
    assert deadline["armed"] is True and deadline["read"] == "graphql", deadline
    assert "/run/lorapod/credentials" in deadline["credential"] and "graphql" in deadline["methods"]
    assert_nothing_billing_and_data_kept(emu, run)


def test_your_own_image_without_a_repository_stops_before_any_api_call(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    run = run_lorapod("gpu=rtx5090", f"provider.api_url={emu.url}", f"remote.workdir={workdir}", "image=lorapod",
                      run_dir=run_dir, env=env_for(emu))
    assert run.proc.returncode == 2, run.output
    assert "image.repository: is required for image=lorapod" in run.output
    assert "image.repository=docker.io/<you>/lorapod-trainer" in run.output and "drop image=lorapod" in run.output
    assert run.summary["failed_stage"] == "config" and set(run.summary["stages"]) == {"config"}
    assert emu.requests == [] and emu.pods == {}


def test_capacity_falls_back_to_the_next_cloud_and_gpu_with_a_table(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    emu.faults.no_capacity(RTX5090, ["COMMUNITY", "SECURE"])
    emu.faults.no_capacity(RTX4090, ["COMMUNITY"])
    run = run_lorapod(*canonical(emu, workdir, "train.max_steps=3"), run_dir=run_dir, env=env_for(emu))
    assert run.proc.returncode == 0, run.output
    [pod] = emu.pods.values()
    assert (pod.request["gpu"]["id"], pod.request["cloud"]) == (RTX4090, "SECURE")
    assert run.summary["pod"]["gpu"] == RTX4090
    table = run.output[run.output.index("capacity attempts:"):]
    assert re.search(r"rtx5090\s+COMMUNITY\s+no capacity", table) and re.search(r"rtx4090\s+SECURE\s+created", table)
    assert_nothing_billing_and_data_kept(emu, run)


def test_no_capacity_anywhere_fails_cleanly(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    emu.faults.no_capacity(RTX5090)
    emu.faults.no_capacity(RTX4090)
    run = run_lorapod(*canonical(emu, workdir), run_dir=run_dir, env=env_for(emu))
    assert run.proc.returncode == 1
    assert run.summary["failed_stage"] == "deploy" and "no capacity" in run.summary["error"]
    # Capacity texts vary (the emulator answers each in turn): every one is "next candidate", and when all
    # failed the table gives each candidate's own words.
    table = run.output[run.output.index("capacity attempts:"):]
    assert all(text in table for text in CAPACITY_DETAILS), table
    assert emu.pods == {}
    assert_nothing_billing_and_data_kept(emu, run)


def test_rate_limits_and_server_errors_on_reads_are_retried(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    emu.faults.rate_limit(count=2, retry_after_s=1, methods=["GET"])
    emu.faults.read_errors(count=3, status=503)
    run = run_lorapod(*canonical(emu, workdir, "train.max_steps=3"), run_dir=run_dir, env=env_for(emu))
    assert run.proc.returncode == 0, run.output
    statuses = [r.status for r in emu.requests]
    assert statuses.count(429) == 2 and statuses.count(503) == 3
    assert_nothing_billing_and_data_kept(emu, run)


def test_a_create_that_errors_after_creating_is_adopted_not_repeated(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    emu.faults.create_500_after_create = 1
    run = run_lorapod(*canonical(emu, workdir, "train.max_steps=3"), run_dir=run_dir, env=env_for(emu))
    assert run.proc.returncode == 0, run.output
    assert len(emu.pods) == 1, "exactly one pod was ever created"
    assert "adopting pod" in run.output
    assert [r.method for r in emu.requests if r.template == "/v2/pods"].count("POST") == 1
    assert_nothing_billing_and_data_kept(emu, run)


def creates(emu) -> list:
    return [r for r in emu.requests if r.method == "POST" and r.template == "/v2/pods"]


def test_create_errors_429_waits_403_and_any_400_go_to_the_next_candidate(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    emu.faults.rate_limit(count=1, retry_after_s=1, methods=["POST"], paths=["/v2/pods"])
    emu.faults.forbid_pool(RTX5090, ["COMMUNITY"])
    emu.faults.no_capacity(RTX5090, ["SECURE"], detail=CAPACITY_DETAILS[1])  # the v1 era's words
    run = run_lorapod(*canonical(emu, workdir, "train.max_steps=3"), run_dir=run_dir, env=env_for(emu))
    assert run.proc.returncode == 0, run.output
    sent = [(r.status, r.body["gpu"]["id"], r.body["cloud"]) for r in creates(emu)]
    assert sent == [(429, RTX5090, "COMMUNITY"), (403, RTX5090, "COMMUNITY"), (400, RTX5090, "SECURE"),
                    (201, RTX4090, "COMMUNITY")]
    table = run.output[run.output.index("capacity attempts:"):]
    assert re.search(r"rtx5090\s+COMMUNITY\s+no access to this pool \(403\)", table)
    assert re.search(r"rtx5090\s+SECURE\s+refused \(400\)", table)
    assert CAPACITY_DETAILS[1] not in table, "details only when every candidate failed"
    assert_nothing_billing_and_data_kept(emu, run)


def test_the_catalog_rules_out_pairs_that_cannot_exist(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    next(o for o in emu.catalog if o.id == RTX5090).community = False  # GpuType.community: false
    run = run_lorapod(*canonical(emu, workdir, "train.max_steps=3"), run_dir=run_dir, env=env_for(emu))
    assert run.proc.returncode == 0, run.output
    assert [(r.body["gpu"]["id"], r.body["cloud"]) for r in creates(emu)] == [(RTX5090, "SECURE")]
    assert re.search(r"rtx5090\s+COMMUNITY\s+skipped: RunPod's catalog offers no", run.output)
    assert_nothing_billing_and_data_kept(emu, run)


def test_a_network_volume_is_never_tried_on_community(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    run = run_lorapod(*canonical(emu, workdir, "train.max_steps=3", "provider.network_volume_id=vol_e2e"),
                      run_dir=run_dir, env=env_for(emu))
    assert run.proc.returncode == 0, run.output
    assert [r.body["cloud"] for r in creates(emu)] == ["SECURE"]
    [pod] = emu.pods.values()
    assert pod.request["mounts"] == {"network": [{"volumeId": "vol_e2e", "path": "/workspace"}]}
    assert re.search(r"rtx5090\s+COMMUNITY\s+skipped: provider.network_volume_id is set, and network "
                     r"volumes are SECURE cloud only", run.output)
    assert_nothing_billing_and_data_kept(emu, run)


def test_a_host_without_a_public_ip_is_replaced_by_the_next_candidate(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    emu.faults.no_public_ip = 1
    run = run_lorapod(*canonical(emu, workdir, "train.max_steps=3", "provider.public_ip_timeout_s=2",
                                 "provider.poll_interval_s=0.2", "probe.timeout_s=30"),
                      run_dir=run_dir, env=env_for(emu))
    assert run.proc.returncode == 0, run.output
    first, second = emu.pods.values()  # in the order they were created
    assert (first.cloud, second.cloud) == ("COMMUNITY", "SECURE")
    assert not first.public_ip and run.summary["pod"]["id"] == second.id
    assert f"pod {first.id} (COMMUNITY) has run 2s without a public IP" in run.output
    assert re.search(rf"rtx5090\s+COMMUNITY\s+no public IP after 2s: deleted {first.id}", run.output)
    assert_nothing_billing_and_data_kept(emu, run)


def test_ctrl_c_while_the_create_is_in_flight_leaves_no_pod(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    emu.faults.create_delay_s = 3.0  # the pod exists at once; RunPod answers 3 s later
    with Background(*canonical(emu, workdir), run_dir=run_dir, env=env_for(emu)) as bg:
        wait_for(lambda: bool(emu.pods), 60, "the create to reach RunPod")
        assert not creates(emu), "the create is still in flight"
        bg.proc.send_signal(signal.SIGINT)
        run = bg.finish(timeout=120)
    assert run.proc.returncode == 130, run.output
    assert run.summary["status"] == "interrupted" and run.summary["stages"]["deploy"]["status"] == "interrupted"
    [pod] = emu.pods.values()
    assert [r.path for r in emu.requests if r.method == "DELETE"] == [f"/v2/pods/{pod.id}"]
    assert_nothing_billing_and_data_kept(emu, run)


def test_a_create_that_times_out_and_is_listed_only_later_is_adopted(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    emu.faults.create_delay_s = 4.0  # longer than the client waits
    emu.faults.list_lag_s = 2.0  # and the pod list shows the new pod only 2 s after it was made
    run = run_lorapod(*canonical(emu, workdir, "train.max_steps=3", "provider.request_timeout_s=1",
                                 "provider.reconcile_s=10", "provider.poll_interval_s=0.2"),
                      run_dir=run_dir, env=env_for(emu))
    assert run.proc.returncode == 0, run.output
    assert len(emu.pods) == 1, "exactly one pod was ever created"
    assert "adopting pod" in run.output and len(creates(emu)) <= 1
    assert_nothing_billing_and_data_kept(emu, run)


def test_a_201_that_is_not_a_pod_is_reconciled_by_name(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    emu.faults.create_garbled = 1  # the pod is made; the answer is an HTML page
    emu.faults.list_lag_s = 1.0
    run = run_lorapod(*canonical(emu, workdir, "train.max_steps=3", "provider.reconcile_s=10",
                                 "provider.poll_interval_s=0.2"), run_dir=run_dir, env=env_for(emu))
    assert run.proc.returncode == 0, run.output
    assert len(emu.pods) == 1 and "a 201 whose body is not JSON" in run.output and "adopting pod" in run.output
    assert_nothing_billing_and_data_kept(emu, run)


def test_terminate_deletes_every_pod_with_the_run_name(runpod_emulator, workdir, run_dir):
    """A duplicate of our pod (as a retried create can leave) is the run's too, recorded or not."""
    import httpx

    emu = runpod_emulator
    with Background(*canonical(emu, workdir, "train.max_steps=3"), run_dir=run_dir, env=env_for(emu)) as bg:
        wait_for(lambda: bool(emu.pods), 60, "the run's pod")
        [ours] = emu.pods.values()
        duplicate = httpx.post(f"{emu.url}/pods", json=ours.request,
                               headers={"Authorization": f"Bearer {emu.api_key}"}).json()["id"]
        run = bg.finish(timeout=300)
    assert run.proc.returncode == 0, run.output
    assert_nothing_billing_and_data_kept(emu, run)
    assert run.summary["pod"]["id"] == ours.id and f"deleting pod {duplicate}, also named {ours.name}" in run.output


@pytest.mark.parametrize("timeouts, key", [
    (("provider.ready_timeout_s=4",), "provider.ready_timeout_s"),
    # An image's own timeout (a 27 GB image pulls for many minutes) wins over the provider's.
    (("provider.ready_timeout_s=3600", "image.ready_timeout_s=4"), "image.ready_timeout_s"),
])
def test_a_pod_that_never_gets_ready_shows_its_log_and_is_deleted(runpod_emulator, workdir, run_dir, timeouts, key):
    emu = runpod_emulator
    emu.faults.never_ready = True
    run = run_lorapod(*canonical(emu, workdir, *timeouts, "provider.poll_interval_s=0.5"),
                      run_dir=run_dir, env=env_for(emu))
    assert run.proc.returncode == 1
    assert run.summary["failed_stage"] == "probe"
    assert f"was not ready (RUNNING with a public TCP port 22) within 4s ({key};" in run.summary["error"]
    assert "container log:" in run.output and "CUDA" in run.output
    assert run.summary["stages"]["terminate"]["status"] == "succeeded"
    assert_nothing_billing_and_data_kept(emu, run)


def test_sshd_refusing_connections_at_first_is_waited_for(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    emu.faults.refuse_ssh_for_s = 3.0
    # Polling fast, we see the pod ready while its sshd still refuses: probe must keep trying.
    run = run_lorapod(*canonical(emu, workdir, "train.max_steps=3", "provider.poll_interval_s=0.2"),
                      run_dir=run_dir, env=env_for(emu))
    assert run.proc.returncode == 0, run.output
    assert re.search(r"connected to .* after \d+ attempts", run.output)
    assert_nothing_billing_and_data_kept(emu, run)


def test_a_connection_drop_at_step_22_of_26_does_not_lose_the_run(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    home_log = run_dir / "train.log"

    def at_step_22() -> bool:
        return home_log.exists() and '"step": 22,' in home_log.read_text(errors="ignore")

    with Background(*canonical(emu, workdir, "train.max_steps=26", "train.logging_steps=1"), run_dir=run_dir,
                    env=env_for(emu)) as bg:
        wait_for(lambda: bool(emu.pods), 60, "the pod")
        [pod_id] = emu.pods
        trigger = emu.cut_connections_when(pod_id, at_step_22)
        run = bg.finish()
    assert run.proc.returncode == 0, run.output
    assert trigger.fired, "the connection was cut"
    assert "connection lost" in run.output
    assert run.summary["metrics"]["steps"] == 26
    steps = [json.loads(line.split(" ", 1)[1])["step"] for line in home_log.read_text().splitlines()
             if line.startswith("@@lorapod ") and '"event": "step"' in line]
    assert steps == list(range(1, 27)), "every step seen once, none lost, none twice"
    assert_nothing_billing_and_data_kept(emu, run)


def test_ctrl_c_during_training_deletes_the_pod(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    with Background(*canonical(emu, workdir, "train.max_steps=100000", "train.logging_steps=20"), run_dir=run_dir,
                    env=env_for(emu)) as bg:
        bg.wait_for_training()
        bg.proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        bg.proc.send_signal(signal.SIGINT)
        run = bg.finish(timeout=120)
    assert run.proc.returncode == 130, run.output
    assert run.summary["status"] == "interrupted"
    assert [r.method for r in emu.requests if r.template == "/v2/pods/{id}"].count("DELETE") >= 1
    assert_nothing_billing_and_data_kept(emu, run)


def test_a_pod_deleted_from_the_console_mid_run_does_not_hang_the_client(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    with Background(*canonical(emu, workdir, "train.max_steps=100000", "train.logging_steps=20"), run_dir=run_dir,
                    env=env_for(emu)) as bg:
        bg.wait_for_training()
        [pod_id] = emu.pods
        emu.terminate(pod_id)  # as if from RunPod's console
        run = bg.finish(timeout=180)
    assert run.proc.returncode == 1, run.output
    assert run.summary["failed_stage"] == "train" and "pod is gone" in run.summary["error"]
    assert_nothing_billing_and_data_kept(emu, run)


def test_a_refused_api_key_is_named_and_nothing_is_created(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    wrong = fake_key("wrongkey")
    run = run_lorapod(*canonical(emu, workdir), run_dir=run_dir, env=lorapod_env(RUNPOD_API_KEY=wrong))
    assert run.proc.returncode == 1
    assert "RunPod refused the API key" in run.output and wrong not in run.output
    assert emu.pods == {}
    assert_nothing_billing_and_data_kept(emu, run)


@pytest.mark.parametrize("fault, says", [
    ("read_only_key", "lacks permission"),
    ("insufficient_balance", "balance is too low"),
])
def test_a_create_refused_for_the_account_says_why(runpod_emulator, workdir, run_dir, fault, says):
    emu = runpod_emulator
    env = env_for(emu)
    if fault == "read_only_key":
        env["RUNPOD_API_KEY"] = fake_key("readonly")
        emu.add_key(env["RUNPOD_API_KEY"], methods=("GET",))
    else:
        emu.faults.insufficient_balance = True
    run = run_lorapod(*canonical(emu, workdir), run_dir=run_dir, env=env)
    assert run.proc.returncode == 1
    assert run.summary["failed_stage"] == "deploy" and says in run.output
    assert emu.pods == {}
    assert_nothing_billing_and_data_kept(emu, run)


def test_a_pod_that_cannot_be_deleted_is_reported_loudly_with_the_fix(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    emu.faults.server_errors(count=10_000, status=503, methods=["DELETE"])
    run = run_lorapod(*canonical(emu, workdir, "train.max_steps=2", "provider.api_retry_s=2"), run_dir=run_dir,
                      env=env_for(emu))
    assert run.proc.returncode == 1
    [pod] = emu.live_pods()
    assert f"COULD NOT DELETE POD {pod.id}" in run.output
    assert run.summary["status"] == "failed" and run.summary["failed_stage"] == "terminate"
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file(), "the finished training is home"
    # The fix names this one pod (reap deletes a pod it cannot prove ours only when named), and works as printed.
    printed = re.search(r"python -m engine\.reap (--pod \S+ --yes --api-url \S+)", run.output)
    assert printed and f"--pod {pod.id} " in printed.group(1), run.output
    emu.faults.rules.clear()
    reap = subprocess.run([PYTHON, "-m", "engine.reap", *printed.group(1).split()], cwd=REPO, capture_output=True,
                          text=True, env=env_for(emu))
    assert reap.returncode == 0 and f"deleted {pod.id}" in reap.stdout, reap.stdout + reap.stderr
    assert_nothing_billing_and_data_kept(emu, run)


def test_an_unknown_gpu_lists_the_valid_ids(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    run = run_lorapod(*canonical(emu, workdir, "gpu.id=NVIDIA RTX 9999"), run_dir=run_dir, env=env_for(emu))
    assert run.proc.returncode == 1
    assert "no GPU type 'NVIDIA RTX 9999'" in run.output and RTX5090 in run.output
    assert emu.pods == {}
    assert_nothing_billing_and_data_kept(emu, run)


def reap(emu, runs: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "engine.reap", "--api-url", emu.url, "--runs-dir", str(runs), *args],
                          cwd=REPO, capture_output=True, text=True, env=env_for(emu))


def test_reap_deletes_only_pods_of_runs_found_here_and_spares_live_ones(runpod_emulator, tmp_path):
    import socket

    import httpx

    emu = runpod_emulator
    emu.faults.list_lag_s = 0  # about the list's contents, not its lag (tested on its own)
    emu.faults.never_ready = True  # pods to list and delete: no sshd needed
    emu.page_size = 1  # and the list comes one pod a page
    auth = {"Authorization": f"Bearer {emu.api_key}"}
    runs = tmp_path / "runs"

    def create(name: str) -> str:
        body = {"name": name, "image": "x/y:z", "gpu": {"id": RTX4090, "count": 1}, "ports": ["22/tcp"]}
        return httpx.post(f"{emu.url}/pods", json=body, headers=auth).json()["id"]

    def run_folder(run_id: str, status: str, pid: int) -> None:
        folder = runs / run_id
        folder.mkdir(parents=True)
        (folder / "state.json").write_text(json.dumps({"run_id": run_id, "status": status, "pod": None,
                                                       "owner": {"host": socket.gethostname(), "pid": pid}}))

    # Listed first: a lorapod-looking pod no run folder here names (another machine's run, another checkout).
    elsewhere = create("lorapod-20260101-000000-else")
    dead, live, foreign = create("lorapod-20260101-000000-dead"), create("lorapod-20260101-000000-live"), \
        create("not-ours")
    run_folder("20260101-000000-dead", "failed", 0)
    run_folder("20260101-000000-live", "running", os.getpid())
    run_folder("20260101-000000-gone", "succeeded", 0)  # its pod is long gone: nothing to match

    first = reap(emu, runs, "--yes")
    assert first.returncode == 0, first.stdout + first.stderr
    assert re.search(rf"{elsewhere}.*UNCLAIMED", first.stdout) and re.search(rf"{dead}.*ORPHAN", first.stdout)
    assert re.search(rf"{live}.*live here", first.stdout) and foreign not in first.stdout
    assert {p.id for p in emu.live_pods()} == {elsewhere, live, foreign}, f"only {dead} goes"

    refused = reap(emu, runs, "--pod", live, "--pod", foreign, "--yes")
    assert refused.returncode == 1 and {p.id for p in emu.live_pods()} == {elsewhere, live, foreign}
    named = reap(emu, runs, "--pod", elsewhere, "--yes")
    assert named.returncode == 0 and {p.id for p in emu.live_pods()} == {live, foreign}, named.stdout + named.stderr

    another = create("lorapod-someone-else")
    everything = reap(emu, runs, "--unclaimed", "--yes")
    assert everything.returncode == 0 and {p.id for p in emu.live_pods()} == {live, foreign}
    assert f"deleted {another}" in everything.stdout
    for pod_id in (live, foreign):
        emu.terminate(pod_id)


@pytest.mark.parametrize("where", ["http://0.0.0.0:{port}/v2", "http://runpod.invalid/v2"])
def test_a_plain_http_api_url_beyond_this_machine_is_refused_before_the_key_is_sent(runpod_emulator, workdir,
                                                                                    run_dir, where):
    emu = runpod_emulator
    # 0.0.0.0 is not a loopback address, yet Linux delivers a connection to it here: what reaches the emulator
    # would have crossed a network in clear text. runpod.invalid never resolves (RFC 2606).
    url = where.format(port=emu.port)
    args = [f"provider.api_url={url}" if a.startswith("provider.api_url=") else a for a in canonical(emu, workdir)]
    run = run_lorapod(*args, run_dir=run_dir, env=env_for(emu))
    assert run.proc.returncode == 2, run.output
    assert "provider.api_url" in run.output and "https" in run.output
    assert emu.requests == [] and emu.pods == {}
