"""`python -m engine.status`: every run under a folder and every lorapod pod on the account, from the files real
runs left (a local run, a failed one, one SIGKILLed mid-training) and from the RunPod emulator's pods."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from engine.state import RunState, StageRecord
from tests.conftest import PYTHON, REPO, Background, fake_key, lorapod_env, run_lorapod, wait_for

RTX4090 = "NVIDIA GeForce RTX 4090"


def status(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The command as a user types it, from a folder of the test's own (its runs/ is the default --runs-dir, and
    no .env of the project's is read): the project is found through PYTHONPATH."""
    return subprocess.run([PYTHON, "-m", "engine.status", *args], cwd=cwd, capture_output=True, text=True,
                          env=lorapod_env(PYTHONPATH=str(REPO), **env), timeout=120)


def as_json(cwd: Path, *args: str, **env: str) -> tuple[dict, subprocess.CompletedProcess]:
    proc = status(cwd, "--json", *args, **env)
    return json.loads(proc.stdout, parse_constant=_strict), proc


def _strict(name: str):
    raise ValueError(f"{name} is not JSON (RFC 8259): a script's parser would refuse the output")


def dead_owner() -> dict:
    """The owner record (engine/process.py) of a real process that has since exited."""
    proc = subprocess.run([PYTHON, "-c", "import json; from engine.process import owner; print(json.dumps(owner()))"],
                          cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def save_state(folder: Path, run_id: str, status: str, **fields) -> RunState:
    folder.mkdir(parents=True)
    state = RunState(run_id=run_id, status=status)
    for name, value in fields.items():
        setattr(state, name, value)
    state.save(folder / "state.json")
    return state


def test_a_succeeded_and_a_failed_local_run(tmp_path):
    runs = tmp_path / "runs"
    done = runs / "2026-11-29" / "10-00-00"
    succeeded = run_lorapod("train.max_steps=2", run_dir=done)
    assert succeeded.proc.returncode == 0, succeeded.output
    failed_dir = runs / "multirun" / "2026-11-29" / "11-00-00" / "0"
    failed = run_lorapod("pipeline.stages.train._target_=tests.fixtures.stages.Boom", run_dir=failed_dir)
    assert failed.proc.returncode == 1, failed.output

    out, proc = as_json(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [r["folder"] for r in out["runs"]] == [str(failed_dir), str(done)], "newest first"
    bad, good = out["runs"]
    assert bad["run_id"] == failed.summary["run_id"] and bad["status"] == "failed" and bad["stage"] == "train"
    assert bad["eval_loss_after"] is None and bad["adapter_id"] is None and bad["pod_terminated"] is True
    summary, state = succeeded.summary, succeeded.state
    assert good["run_id"] == summary["run_id"] and good["status"] == "succeeded" and good["process"] is None
    assert good["eval_loss_before"] == summary["metrics"]["eval_loss_before"]
    assert good["eval_loss_after"] == summary["metrics"]["eval_loss_after"]
    assert (good["adapter_id"], good["adapter_status"]) == (summary["adapter"]["id"], summary["adapter"]["status"])
    last = max(state["stages"], key=lambda n: state["stages"][n]["ended_at"] or 0)
    assert good["stage"] == last and good["pod_id"] == state["pod"]["id"]
    assert abs(good["elapsed_s"] - summary["seconds"]) < 0.01
    assert good["cost_kind"] == "estimate" and good["cost_usd"] == summary["cost_usd_estimate"]
    # no key: said, and why; nothing failed
    assert out["pods"] is None and "RUNPOD_API_KEY is not set" in out["pods_note"] and out["error"] is None

    text = status(tmp_path)
    assert text.returncode == 0 and text.stderr == ""
    lines = text.stdout.splitlines()
    assert lines[0].split()[:4] == ["run", "started", "status", "stage"]
    assert lines[2].split()[0] == bad["run_id"] and " failed " in lines[2] and " train " in lines[2]
    loss = f"{good['eval_loss_before']:.3f} -> {good['eval_loss_after']:.3f}"
    assert good["adapter_id"] == good["run_id"], "the registry names an adapter after its run"
    assert lines[3].split()[0] == good["run_id"] and loss in lines[3]
    assert lines[3].split()[-2] == good["adapter_status"], lines[3]
    assert "live pods: not shown: RUNPOD_API_KEY is not set" in text.stdout


def test_a_run_whose_process_was_killed_is_stale(tmp_path):
    runs = tmp_path / "runs"
    run_dir = runs / "2026-11-29" / "12-00-00"
    with Background("train.max_steps=100000", "train.logging_steps=10", run_dir=run_dir) as bg:
        try:
            # Training launched on the "pod" (its pid file is there): run.py is in its train stage.
            wait_for(lambda: any(run_dir.glob("pod/*/train.pid")), 600, "the training to launch")
            out, _ = as_json(tmp_path)
            [row] = out["runs"]
            assert (row["status"], row["process"], row["stage"]) == ("running", "alive", "train"), row
            assert row["owner"]["pid"] == bg.proc.pid
            text = status(tmp_path).stdout
            assert " running " in text and "attach" not in text

            bg.proc.send_signal(signal.SIGKILL)  # the laptop's lid: nothing runs the cleanup
            bg.proc.wait()
            out, proc = as_json(tmp_path)
            [row] = out["runs"]
            assert (row["status"], row["recorded_status"], row["process"], row["stage"]) == \
                ("stale", "running", "dead", "train"), row
            text = status(tmp_path).stdout
            assert " stale " in text and f"python -m engine.attach {run_dir}" in text and proc.returncode == 0
        finally:
            for pid_file in run_dir.glob("pod/*/train.pid"):  # the "pod" trains on without its run: stop it
                try:
                    os.killpg(int(pid_file.read_text()), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass


def test_a_reused_pid_is_not_a_live_run(tmp_path):
    """The run's pid now belongs to another process (this one): its recorded identity, or for a record without
    one its start after the run's, tells them apart."""
    runs, host, me = tmp_path / "runs", socket.gethostname(), os.getpid()
    save_state(runs / "other-identity", "20260101-000000-aaaa", "running",
               owner={"host": host, "pid": me, "identity": "another-boot:12345"})
    save_state(runs / "old-record", "20260101-000000-bbbb", "running", started_at=time.time() - 10 * 86400,
               owner={"host": host, "pid": me})
    save_state(runs / "this-process", "20260101-000000-cccc", "running")  # the owner this process records
    # python -m engine.attach took an old run over: it records {at, pid}, and a pid without an identity
    save_state(runs / "attached", "20260101-000000-eeee", "running", started_at=time.time() - 10 * 86400,
               owner={"host": host, "pid": me}, outputs={"attach": [{"at": time.time(), "pid": me}]})
    save_state(runs / "elsewhere", "20260101-000000-dddd", "running", owner={"host": "another-laptop", "pid": me})
    out, _ = as_json(tmp_path)
    seen = {r["run_id"][-4:]: (r["status"], r["process"]) for r in out["runs"]}
    assert seen == {"aaaa": ("stale", "dead"), "bbbb": ("stale", "dead"), "cccc": ("running", "alive"),
                    "dddd": ("running?", "unknown"), "eeee": ("running", "alive")}
    assert "running on another-laptop, which this machine cannot check" in status(tmp_path).stdout


def _create(emu, name: str) -> str:
    body = {"name": name, "image": "x/y:z", "gpu": {"id": RTX4090, "count": 1}, "ports": ["22/tcp"]}
    return httpx.post(f"{emu.url}/pods", json=body, headers={"Authorization": f"Bearer {emu.api_key}"}).json()["id"]


def test_live_pods_each_with_the_run_that_owns_it(runpod_emulator, tmp_path):
    emu = runpod_emulator
    emu.faults.list_lag_s = 0  # about the list's contents, not its lag
    emu.faults.never_ready = True  # pods to list: no sshd needed
    emu.page_size = 2  # and the list comes in pages
    runs = tmp_path / "runs"
    by_id, by_name = _create(emu, "lorapod-20260101-000000-aaaa"), _create(emu, "lorapod-20260101-000000-bbbb")
    orphan, foreign = _create(emu, "lorapod-20260101-000000-else"), _create(emu, "not-ours")
    detached = _create(emu, "lorapod-20260101-000000-cccc")
    try:
        created = time.time() - 600
        # A run that failed and could not delete its pod (state.json has the pod), and one killed right after its
        # create was sent (state.json has no pod yet: only its unique name finds it).
        failed = runs / "2026-01-01" / "00-00-00"
        save_state(failed, "20260101-000000-aaaa", "failed", ended_at=time.time() - 60, marks={"pod_created": created},
                   stages={"train": StageRecord(status="failed", started_at=created)},
                   pod={"id": by_id, "name": "lorapod-20260101-000000-aaaa", "provider": "runpod",
                        "price_per_hour": 0.01, "terminated": False})
        killed = runs / "2026-01-01" / "00-00-01"
        save_state(killed, "20260101-000000-bbbb", "running", owner=dead_owner(), marks={"create_sent": created},
                   stages={"deploy": StageRecord(status="running", started_at=created)})
        away = runs / "2026-01-01" / "00-00-02"  # returned on purpose while the pod trains (provider.detach=true)
        save_state(away, "20260101-000000-cccc", "detached", owner=dead_owner(), ended_at=time.time(),
                   pod={"id": detached, "name": "lorapod-20260101-000000-cccc", "provider": "runpod"})
        price = httpx.get(f"{emu.url}/pods/{by_id}", headers={"Authorization": f"Bearer {emu.api_key}"}).json()["cost"]
        before = time.time()
        out, proc = as_json(tmp_path, "--api-url", emu.url, RUNPOD_API_KEY=emu.api_key)
        after = time.time()
        assert proc.returncode == 0 and out["error"] is None, proc.stderr
        pods = {p["id"]: p for p in out["pods"]}
        assert set(pods) == {by_id, by_name, orphan, detached} and out["other_pods"] == 1
        assert pods[by_id]["run_folder"] == str(failed)
        assert "ended (failed) but the pod is still up" in pods[by_id]["note"]
        reap = f"python -m engine.reap --api-url {emu.url} --pod"
        assert f"{reap} {by_id}" in pods[by_id]["note"] and pods[by_id]["cost_per_hour"] == price
        assert pods[by_name]["run_id"] == "20260101-000000-bbbb"
        assert f"python -m engine.attach {killed}" in pods[by_name]["note"]
        assert pods[orphan]["run_id"] is None and f"no run here owns it: delete with {reap} {orphan}" == \
            pods[orphan]["note"]
        rows = {r["run_id"]: r for r in out["runs"]}
        aaaa = rows["20260101-000000-aaaa"]
        # Still billing: so far at the account's $/h for it, not the recorded one.
        assert aaaa["pod_live"] is True and aaaa["cost_kind"] == "live"
        assert (before - created) / 3600 * price - 1e-4 <= aaaa["cost_usd"] <= (after - created) / 3600 * price + 1e-4
        assert rows["20260101-000000-bbbb"]["status"] == "stale"
        assert rows["20260101-000000-cccc"]["status"] == "detached", "a process that returned on purpose is not stale"
        assert pods[detached]["note"] == f"detached on purpose: python -m engine.attach {away} follows it to the end"

        text = status(tmp_path, "--api-url", emu.url, RUNPOD_API_KEY=emu.api_key)
        assert text.returncode == 0, text.stderr
        [orphan_line] = [line for line in text.stdout.splitlines() if line.startswith(orphan)]
        assert "no run here owns it" in orphan_line
        assert foreign not in text.stdout and "1 other pod(s)" in text.stdout
        assert emu.api_key not in text.stdout + text.stderr
        assert {p.id for p in emu.live_pods()} == {by_id, by_name, orphan, foreign, detached}, "status deletes nothing"
    finally:
        for pod_id in (by_id, by_name, orphan, foreign, detached):
            emu.terminate(pod_id)


def test_an_api_error_is_one_line_and_the_runs_are_still_shown(runpod_emulator, tmp_path):
    save_state(tmp_path / "runs" / "r", "20260101-000000-aaaa", "succeeded", ended_at=time.time())
    wrong = fake_key("wrong")
    proc = status(tmp_path, RUNPOD_API_KEY=wrong, LORAPOD_RUNPOD_API_URL=runpod_emulator.url)
    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()
    assert line.startswith("error: live pods: the RunPod API failed") and "401" in line, proc.stderr
    assert "20260101-000000-aaaa" in proc.stdout and wrong not in proc.stdout + proc.stderr
    out, proc = as_json(tmp_path, RUNPOD_API_KEY=wrong, LORAPOD_RUNPOD_API_URL=runpod_emulator.url)
    assert proc.returncode == 1 and "401" in out["error"] and out["pods"] is None and len(out["runs"]) == 1


def test_hostile_and_garbled_run_folders_are_one_warning_each(tmp_path):
    runs = tmp_path / "runs"
    bad = {"garbled": b'{"run_id": "x", "status": "runn', "array": b"[1, 2]", "binary": bytes(range(256)),
           "deep": b"[" * 200_000 + b"]" * 200_000}
    for name, data in bad.items():
        (runs / name).mkdir(parents=True)
        (runs / name / "state.json").write_bytes(data)
    (runs / "fifo").mkdir()
    os.mkfifo(runs / "fifo" / "state.json")  # reading it would hang
    (runs / "folder" / "state.json").mkdir(parents=True)
    for name, state in {
        "types": {"run_id": 42, "status": ["running"], "started_at": "yesterday", "stages": "all", "pod": [1],
                  "marks": 5, "outputs": {"cost": "lots", "result": [], "adapter": 7}, "owner": "me"},
        "escape": {"run_id": "\x1b[2J\x1b[31mevil", "status": "succeeded\nforged line", "started_at": 1.0,
                   "stages": {"\x1b]0;title\x07": {"status": "running", "started_at": 2}}},
    }.items():
        (runs / name).mkdir()
        (runs / name / "state.json").write_text(json.dumps(state))
    (runs / "nan").mkdir()
    (runs / "nan" / "state.json").write_text('{"run_id": "nan", "status": "failed", "started_at": NaN, '
                                             '"ended_at": Infinity, "marks": {"pod_created": -Infinity}, '
                                             '"owner": {"host": NaN, "pid": Infinity}}')
    good = save_state(runs / "good", "20260101-000000-good", "succeeded", ended_at=time.time())
    os.mkfifo(runs / "good" / "run.log")  # the logs are never read: this one would hang the reader
    fallback = runs / "fallback"
    fallback.mkdir()
    (fallback / "state.json").write_text("{")
    (fallback / "run-summary.json").write_text(json.dumps({"run_id": "from-summary", "status": "interrupted",
                                                           "metrics": {"eval_loss_before": 2.5},
                                                           "cost_usd_estimate": 0.12, "cost_usd_actual": None}))

    out, proc = as_json(tmp_path)
    assert proc.returncode == 0, proc.stderr
    warnings = proc.stderr.splitlines()
    for name in [*bad, "fifo", "folder", "fallback"]:
        assert sum(str(runs / name) + ":" in w for w in warnings) == 1, (name, warnings)
    assert len(warnings) == len(bad) + 3
    assert "shown from run-summary.json" in next(w for w in warnings if str(fallback) in w)
    rows = {Path(r["folder"]).name: r for r in out["runs"]}
    assert set(rows) == {"types", "escape", "nan", "good", "fallback"}
    assert rows["good"]["run_id"] == good.run_id and rows["good"]["status"] == "succeeded"
    assert rows["types"]["run_id"] is None and rows["types"]["status"] == "?" and rows["types"]["started_at"] is None
    assert rows["nan"]["started_at"] is None and rows["nan"]["cost_usd"] is None
    assert rows["fallback"]["status"] == "interrupted" and rows["fallback"]["eval_loss_before"] == 2.5
    assert rows["fallback"]["source"] == "run-summary.json"
    assert (rows["fallback"]["cost_usd"], rows["fallback"]["cost_kind"]) == (0.12, "estimate")

    text = status(tmp_path)
    assert text.returncode == 0 and "\x1b" not in text.stdout + text.stderr and "\x07" not in text.stdout
    assert "forged line" not in text.stdout.splitlines()[0] and not any(
        line.startswith("forged line") for line in text.stdout.splitlines())


def test_hundreds_of_runs_are_all_listed_newest_first(tmp_path):
    runs = tmp_path / "runs" / "multirun" / "2026-11-29" / "10-00-00"
    start = time.time() - 10_000
    for job in range(300):
        save_state(runs / str(job), f"20261129-100000-{job:04d}", "succeeded", started_at=start + job,
                           ended_at=start + job + 30)
        os.mkfifo(runs / str(job) / "run.log")  # never opened, or this would hang
    out, proc = as_json(tmp_path)
    assert proc.returncode == 0 and proc.stderr == ""
    assert [r["run_id"] for r in out["runs"]] == [f"20261129-100000-{job:04d}" for job in reversed(range(300))]
    assert all(abs(r["elapsed_s"] - 30) < 1e-3 for r in out["runs"])


def test_no_runs_folder_is_said_plainly(tmp_path):
    proc = status(tmp_path, "--runs-dir", str(tmp_path / "nowhere"))
    assert proc.returncode == 0 and f"no runs under {tmp_path / 'nowhere'}" in proc.stdout
    assert "no such folder" in proc.stderr


def test_a_stale_run_says_how_long_its_pods_watchdog_waits(tmp_path):
    """Without a detach, the pod's watchdog deletes the pod provider.heartbeat_timeout_s after the run went
    silent: a stale run's note says whether attach is still in time."""
    runs = tmp_path / "runs"
    for suffix, silent_s in (("aaaa", 20 * 60), ("bbbb", 60)):
        folder = runs / suffix
        save_state(folder, f"20260101-000000-{suffix}", "running", owner=dead_owner(),
                   marks={"train_launched": time.time() - silent_s},
                   pod={"id": f"pod{suffix}", "name": f"lorapod-20260101-000000-{suffix}", "provider": "runpod",
                        "terminated": False})
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "config.yaml").write_text("provider:\n  heartbeat_timeout_s: 900\n")
        os.utime(folder / "state.json", (time.time() - silent_s, time.time() - silent_s))
    text = status(tmp_path).stdout
    [late] = [line for line in text.splitlines() if "20260101-000000-aaaa:" in line]
    [soon] = [line for line in text.splitlines() if "20260101-000000-bbbb:" in line]
    assert "silent 20 min, past provider.heartbeat_timeout_s=900s: its pod's watchdog has probably deleted it" in late
    assert "silent 1 min: attach within 14 min" in soon, text
