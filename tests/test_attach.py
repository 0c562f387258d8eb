"""python -m engine.attach RUN_DIR and provider.detach=true, end to end against the RunPod emulator (real HTTP, sshd
pods, real training of the tiny model on CPU), and with provider=local.

The laptop dies the hard way here (SIGKILL: nothing of ours runs afterwards), and every test ends as the issue
asks: the adapter comes home verified, exactly one pod was ever created, none is left billing, the run folder
is kept.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import PYTHON, REPO, Background, Run, lorapod_env, run_lorapod, wait_for
from tests.test_runpod_e2e import assert_nothing_billing_and_data_kept, canonical, creates, env_for

HEARTBEAT_TIMEOUT_S = 10  # short, so that a watchdog counting the heartbeat would act within the test
GUARDED = (f"provider.heartbeat_timeout_s={HEARTBEAT_TIMEOUT_S}", "provider.heartbeat_interval_s=1",
           "provider.watchdog_poll_s=0.2")


@pytest.fixture
def workdir(tmp_path) -> Path:
    return tmp_path / "pod-disk"


def attach(run_dir: Path, env: dict, timeout: float = 600) -> Run:
    proc = subprocess.run([PYTHON, "-m", "engine.attach", str(run_dir)], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=timeout)
    return Run(proc, run_dir)


def state(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def pod_folder(workdir: Path, run_dir: Path) -> Path:
    return workdir / f"lorapod-{state(run_dir)['run_id']}"


def steps_at_home(run_dir: Path) -> list[int]:
    return [json.loads(line.split(" ", 1)[1])["step"] for line in (run_dir / "train.log").read_text().splitlines()
            if line.startswith("@@lorapod ") and '"event": "step"' in line]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_adapter_home_verified(run: Run, workdir: Path, steps: int) -> None:
    """The adapter at home is the one training wrote on the pod (by sha256, against the pod's disk and
    result.json), and the home train.log has every step once."""
    result = json.loads((run.run_dir / "result.json").read_text())
    on_pod = pod_folder(workdir, run.run_dir) / "out"
    for rel in ("adapter/adapter_model.safetensors", "adapter/adapter_config.json"):
        assert sha256(run.run_dir / rel) == sha256(on_pod / rel) == result["files"][rel], rel
    assert steps_at_home(run.run_dir) == list(range(1, steps + 1)), "every step seen once, none lost, none twice"


def assert_one_pod_and_none_left(emu, run: Run) -> None:
    assert len(creates(emu)) == 1 and len(emu.pods) == 1, "exactly one pod was ever created"
    assert_nothing_billing_and_data_kept(emu, run)


def test_killed_mid_training_then_attach_brings_the_adapter_home(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    steps = 8  # killed at the first step: it trains on for the rest
    with Background(*canonical(emu, workdir, f"train.max_steps={steps}"), run_dir=run_dir, env=env_for(emu)) as bg:
        bg.wait_for_training()
        bg.proc.kill()  # the laptop dies: no terminate, no summary
        bg.proc.communicate()
        dead = bg.proc.pid
    assert state(run_dir)["status"] == "running" and len(emu.live_pods()) == 1

    run = attach(run_dir, env_for(emu))
    assert run.proc.returncode == 0, run.output
    summary = run.summary
    assert summary["status"] == "succeeded" and summary["pod"]["terminated"] is True
    [record] = summary["attach"]
    assert record["previous_status"] == "running" and record["from_stage"] == "train"
    assert record["pid"] == run.state["owner"]["pid"] != dead
    assert "training was launched by an earlier process" in run.output
    assert summary["stages"]["attach"]["status"] == "succeeded" and summary["stages"]["fetch"]["status"] == "succeeded"
    assert summary["metrics"]["steps"] == steps
    assert_adapter_home_verified(run, workdir, steps)
    # The heartbeat and the watchdog were started again for the attached run.
    assert summary["deadline"]["armed"] is True
    assert_one_pod_and_none_left(emu, run)


def test_detach_then_attach(runpod_emulator, workdir, run_dir):
    """The run returns once training started, printing the attach command; nothing is deleted. The watchdog is
    told the run is detached: a heartbeat silent for longer than provider.heartbeat_timeout_s deletes nothing
    (the dead-laptop tests show it does otherwise), only the deadline would."""
    emu = runpod_emulator
    steps = 6
    run = run_lorapod(*canonical(emu, workdir, *GUARDED, f"train.max_steps={steps}", "provider.detach=true"),
                      run_dir=run_dir, env=env_for(emu))
    assert run.proc.returncode == 0, run.output
    assert run.summary["status"] == "detached" and run.summary["stages"]["train"]["status"] == "detached"
    assert f"python -m engine.attach {run_dir}" in run.output
    deadline = run.summary["deadline"]  # the cap the watchdog got, said as a time and the most it can cost
    deletes_at = time.strftime("%Y-%m-%d %H:%M", time.localtime(deadline["deletes_at"]))
    assert deadline["deletes_at"] == int(run.state["marks"]["pod_requested"]) + deadline["max_runtime_s"]
    assert f"its own deadline deletes it at {deletes_at}" in run.output and "at most $" in run.output, run.output
    assert not {"fetch", "terminate"} & set(run.summary["stages"]), "nothing after train ran"
    assert len(emu.live_pods()) == 1 and not [r for r in emu.requests if r.method == "DELETE"]
    remote = pod_folder(workdir, run_dir)
    assert (remote / "detached").is_file()

    time.sleep(HEARTBEAT_TIMEOUT_S * 2)  # the heartbeat is silent well past its timeout
    assert len(emu.live_pods()) == 1, "the watchdog deleted a detached pod for a silent heartbeat"
    assert "run detached" in (remote / "watchdog.log").read_text()

    attached = attach(run_dir, env_for(emu))
    assert attached.proc.returncode == 0, attached.output
    summary = attached.summary
    assert summary["status"] == "succeeded" and summary["attach"][0]["previous_status"] == "detached"
    assert summary["stages"]["train"]["status"] == "succeeded"
    assert not (remote / "detached").exists(), "attach told the watchdog the heartbeat counts again"
    assert_adapter_home_verified(attached, workdir, steps)
    assert_one_pod_and_none_left(emu, attached)


def test_attach_after_training_finished_fetches_and_terminates(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    steps = 4
    with Background(*canonical(emu, workdir, f"train.max_steps={steps}"), run_dir=run_dir, env=env_for(emu)) as bg:
        bg.wait_for_training()
        bg.proc.kill()
        bg.proc.communicate()
    wait_for(lambda: (pod_folder(workdir, run_dir) / "exit_code").exists(), 240, "training to finish on the pod")
    assert len(emu.live_pods()) == 1

    run = attach(run_dir, env_for(emu))
    assert run.proc.returncode == 0, run.output
    assert run.summary["status"] == "succeeded" and run.summary["metrics"]["steps"] == steps
    assert_adapter_home_verified(run, workdir, steps)
    assert_one_pod_and_none_left(emu, run)


def test_attach_after_the_pod_was_deleted_from_the_console(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    with Background(*canonical(emu, workdir, "train.max_steps=100000"), run_dir=run_dir, env=env_for(emu)) as bg:
        bg.wait_for_training()
        bg.proc.kill()
        bg.proc.communicate()
    [pod_id] = emu.pods
    emu.terminate(pod_id)  # as if from RunPod's console
    kept = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))

    run = attach(run_dir, env_for(emu))
    assert run.proc.returncode == 1, run.output
    summary = run.summary
    assert summary["status"] == "failed" and summary["failed_stage"] == "attach"
    assert f"pod {pod_id} is gone" in summary["error"] and f"pod {pod_id} is gone" in run.output
    assert summary["stages"]["train"]["status"] == "skipped" and summary["paths"]["adapter"] is None
    assert set(kept) <= {p.relative_to(run_dir) for p in run_dir.rglob("*")}, "the run folder is kept"
    assert not [r for r in emu.requests if r.method == "DELETE"], "nothing to delete: the pod is gone"
    assert_nothing_billing_and_data_kept(emu, run)


def test_attach_to_a_run_that_finished_says_there_is_nothing_to_do(tmp_path):
    run_dir = tmp_path / "run"
    done = run_lorapod("train.max_steps=3", run_dir=run_dir)
    assert done.proc.returncode == 0, done.output
    before = (run_dir / "run-summary.json").read_text(), (run_dir / "state.json").read_text()
    run = attach(run_dir, lorapod_env())
    assert run.proc.returncode == 0, run.output
    assert "already succeeded" in run.output and "nothing to do" in run.output
    assert before == ((run_dir / "run-summary.json").read_text(), (run_dir / "state.json").read_text())


def test_local_detach_then_attach(tmp_path):
    """provider=local: training already runs in its own session, so a detached run goes on without run.py."""
    run_dir = tmp_path / "run"
    steps = 6
    run = run_lorapod(f"train.max_steps={steps}", "provider.detach=true", run_dir=run_dir)
    assert run.proc.returncode == 0, run.output
    assert run.summary["status"] == "detached" and "nothing deletes it meanwhile" in run.output
    assert not (run_dir / "adapter").exists()
    attached = attach(run_dir, lorapod_env())
    assert attached.proc.returncode == 0, attached.output
    assert attached.summary["status"] == "succeeded" and attached.summary["paths"]["adapter"]
    assert steps_at_home(run_dir) == list(range(1, steps + 1))


@pytest.mark.parametrize("missing", ["state.json", ".hydra/config.yaml"])
def test_attach_to_a_folder_that_is_not_a_run_names_what_is_missing(tmp_path, missing):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    for name in {"state.json", ".hydra/config.yaml"} - {missing}:
        (run_dir / name).write_text("{}")
    run = attach(run_dir, lorapod_env())
    assert run.proc.returncode == 2, run.output
    assert f"{run_dir / missing}: is missing" in run.output


def test_a_pod_whose_deadline_is_not_armed_is_never_left_detached(runpod_emulator, workdir, run_dir):
    """A pod key that may do nothing: the watchdog cannot delete the pod, so detaching would leave it to bill for
    good if nobody attached. The run follows training to the end instead, and says why."""
    emu = runpod_emulator
    emu.pod_key = "none"
    run = run_lorapod(*canonical(emu, workdir, "train.max_steps=3", "provider.detach=true"), run_dir=run_dir,
                      env=env_for(emu))
    assert run.proc.returncode == 0, run.output
    assert run.summary["status"] == "succeeded" and run.summary["deadline"]["armed"] is False
    assert "the pod's deadline is not armed" in run.output and "follows training to the end" in run.output
    assert_one_pod_and_none_left(emu, run)


def test_attach_after_the_run_died_past_terminate_finishes_it_and_keeps_the_delete_time(runpod_emulator, workdir,
                                                                                       run_dir):
    """The laptop dies in cost's billing wait, after the pod was deleted: the adapter is home, so attach finishes
    the stages left and the run succeeds; the delete time stays the real one (not the attach's), so the bill
    counted is the pod's life, not how long the user waited."""
    emu = runpod_emulator
    emu.faults.billing_lag_s = 3600.0  # no bill shows: cost waits out provider.billing_wait_s
    with Background(*canonical(emu, workdir, "train.max_steps=2", "provider.billing_wait_s=300"), run_dir=run_dir,
                    env=env_for(emu)) as bg:
        wait_for(lambda: (state(run_dir).get("stages", {}).get("cost") or {}).get("status") == "running", 300,
                 "cost to wait for the bill")
        bg.proc.kill()
        bg.proc.communicate()
    before = state(run_dir)
    assert before["status"] == "running" and "pod_terminated" in before["marks"] and not emu.live_pods()
    emu.faults.billing_lag_s = 0.5
    time.sleep(2)  # the user attaches later: a delete time written now would be at least this much later

    run = attach(run_dir, env_for(emu))
    assert run.proc.returncode == 0, run.output
    assert run.summary["status"] == "succeeded" and run.summary["paths"]["adapter"], run.output
    assert run.state["marks"]["pod_terminated"] == before["marks"]["pod_terminated"]
    assert run.summary["stages"]["cost"]["status"] == "succeeded"
    assert_one_pod_and_none_left(emu, run)


def test_attach_to_a_stopped_pod_deletes_it(runpod_emulator, workdir, run_dir):
    """EXITED (the container crashed while nobody followed) is not gone: the pod still holds its disk and bills
    for it, so attach says so and terminate deletes it."""
    emu = runpod_emulator
    with Background(*canonical(emu, workdir, "train.max_steps=100000"), run_dir=run_dir, env=env_for(emu)) as bg:
        bg.wait_for_training()
        bg.proc.kill()
        bg.proc.communicate()
    [pod] = emu.pods.values()
    with emu._lock:  # as RunPod does when the container exits
        pod.stop()
    pod.kill_processes()

    run = attach(run_dir, env_for(emu))
    assert run.proc.returncode == 1, run.output
    assert f"pod {pod.id} stopped (EXITED)" in run.summary["error"] and run.summary["failed_stage"] == "attach"
    assert [r.path for r in emu.requests if r.method == "DELETE"] == [f"/v2/pods/{pod.id}"]
    assert run.summary["stages"]["terminate"]["status"] == "succeeded" and run.summary["pod"]["terminated"] is True
    assert_one_pod_and_none_left(emu, run)


def test_attach_after_a_failed_delete_settles_the_run_again(runpod_emulator, workdir, run_dir):
    """A delete that failed left cost and settle run against a pod still up (its reservation kept). Once attach
    deletes the pod, they run again: the budget line no longer says the pod is up."""
    emu = runpod_emulator
    emu.faults.server_errors(count=10_000, status=503, methods=["DELETE"])
    failed = run_lorapod(*canonical(emu, workdir, "train.max_steps=2", "provider.api_retry_s=2",
                                    "provider.billing_wait_s=0"), run_dir=run_dir, env=env_for(emu))
    assert failed.proc.returncode == 1 and failed.summary["failed_stage"] == "terminate", failed.output
    assert "is still up" in failed.summary["budget"]["source"]
    first_cost = failed.state["stages"]["cost"]["ended_at"]
    emu.faults.rules.clear()

    run = attach(run_dir, env_for(emu))
    assert run.summary["pod"]["terminated"] is True and not emu.live_pods(), run.output
    assert run.summary["stages"]["terminate"]["status"] == "succeeded"
    assert run.state["stages"]["cost"]["ended_at"] > first_cost, "cost read the bill again"
    assert "still up" not in run.summary["budget"]["source"], run.summary["budget"]
    assert_nothing_billing_and_data_kept(emu, run)
