"""`run.py -m hydra/launcher=joblib` against the RunPod emulator: N pods at once, one table, and a Ctrl-C that
stops every job and leaves no pod, without losing what a finished job made."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PYTHON, REPO, lorapod_env, wait_for
from tests.test_runpod_e2e import canonical, env_for

TABLE_HEAD = "sweep "  # the table's first line: "sweep <folder>: N job(s); best: job ..."


def sweep_cmd(emu, tmp_path: Path, *args: str) -> list[str]:
    return [PYTHON, str(REPO / "run.py"), "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=3",
            *canonical(emu, tmp_path / "pod-disk"), f"registry.path={tmp_path / 'adapters'}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}", *args]


def summaries(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/run-summary.json"))}


def assert_no_pod_left(emu) -> None:
    assert emu.live_pods() == [], [(p.id, p.name, p.status) for p in emu.live_pods()]


def table_lines(stdout: str, sweep: Path) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith(f"{TABLE_HEAD}{sweep}:")]


def test_three_jobs_rent_three_pods_at_once_and_end_with_one_table(runpod_emulator, tmp_path):
    emu, sweep = runpod_emulator, tmp_path / "sweep"
    proc = subprocess.run(sweep_cmd(emu, tmp_path, "train.max_steps=4", "lora.r=4,8,16"), cwd=REPO,
                          capture_output=True, text=True, env=env_for(emu), timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert_no_pod_left(emu)
    pods = list(emu.pods.values())
    assert len(pods) == 3 and len({p.name for p in pods}) == 3
    # All three billed at the same time: the last to be created came up before the first was deleted.
    starts, ends = [p.billed_spans[0][0] for p in pods], [p.billed_spans[-1][1] for p in pods]
    assert None not in ends and max(starts) < min(ends), (starts, ends)
    # Three jobs in three worker processes.
    owners = {json.loads((sweep / n / "state.json").read_text())["owner"]["pid"] for n in "012"}
    assert len(owners) == 3

    jobs = summaries(sweep)
    assert sorted(jobs) == ["0", "1", "2"] and {s["status"] for s in jobs.values()} == {"succeeded"}
    assert {f"lorapod-{s['run_id']}" for s in jobs.values()} == {p.name for p in pods}
    [head] = table_lines(proc.stdout, sweep)  # exactly one table, on stdout
    rows = list(csv.DictReader((sweep / "sweep-summary.csv").open()))
    assert len(rows) == 3 and [r["rank"] for r in rows] == ["1", "2", "3"]
    losses = [float(r["eval_loss"]) for r in rows]
    assert losses == sorted(losses), "best (lowest eval loss) first"
    best = rows[0]
    assert f"best: job {best['job']} (lora.r=" in head and best["run_dir"] in head
    assert {r["overrides"].split("lora.r=")[1].split()[0] for r in rows} == {"4", "8", "16"}
    for r in rows:
        s = jobs[r["job"]]
        assert r["status"] == "succeeded" and float(r["eval_loss"]) == s["metrics"]["eval_loss_after"]
        assert r["adapter_id"] == s["adapter"]["id"] and r["gate"] == s["adapter"]["status"]
        assert r["cost_kind"] in ("actual", "estimate") and float(r["cost_usd"]) >= 0
    assert "final check: no pod of this sweep's 3 RunPod run(s) is up" in proc.stdout


@pytest.mark.parametrize("how", ["ctrl-c to the process group", "SIGTERM to the main process only"])
def test_a_stopped_parallel_sweep_deletes_every_pod_and_keeps_what_finished(runpod_emulator, tmp_path, how):
    emu, sweep = runpod_emulator, tmp_path / "sweep"
    # Job 0 finishes at once; jobs 1 and 2 would train for ever.
    cmd = sweep_cmd(emu, tmp_path, "train.max_steps=3,100000,100001", "train.logging_steps=1")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env_for(emu), start_new_session=True)
    try:
        def training(job: str) -> bool:
            log = sweep / job / "train.log"
            return log.exists() and '"event": "step"' in log.read_text(errors="ignore")

        def finished(job: str) -> bool:
            path = sweep / job / "run-summary.json"
            return path.exists() and json.loads(path.read_text())["status"] == "succeeded"

        wait_for(lambda: finished("0") and training("1") and training("2"), 600, "job 0 done, jobs 1 and 2 training")
        if how.startswith("ctrl-c"):
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        else:
            os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, out + err
    assert_no_pod_left(emu)
    assert len(emu.pods) == 3
    jobs = summaries(sweep)
    assert jobs["0"]["status"] == "succeeded" and (sweep / "0" / "adapter" / "adapter_model.safetensors").is_file()
    for n in ("1", "2"):
        assert jobs[n]["status"] == "interrupted" and jobs[n]["exit_code"] == 130, jobs[n]
        assert jobs[n]["failed_stage"] == "train" and jobs[n]["stages"]["terminate"]["status"] == "succeeded"
        assert jobs[n]["pod"]["terminated"] is True
    # Each job deleted its own pod (the final check found none up), exactly once, none SIGKILLed mid-delete.
    deletes = [r.path for r in emu.requests if r.method == "DELETE"]
    assert sorted(deletes) == sorted(f"/v2/pods/{p.id}" for p in emu.pods.values()), deletes
    assert "final check: no pod of this sweep's 3 RunPod run(s) is up" in out
    [head] = table_lines(out, sweep)
    assert "best: job 0 (train.max_steps=3)" in head
    rows = list(csv.DictReader((sweep / "sweep-summary.csv").open()))
    assert [r["status"] for r in rows] == ["succeeded", "interrupted", "interrupted"]


def test_ctrl_c_stops_a_joblib_sweep_of_one_job_at_a_time(tmp_path):
    # hydra.launcher.n_jobs=1 (or -1 on a one-CPU machine): joblib runs the jobs in the sweep's main process, one
    # after another. The parallel sweep's signal guard would block Ctrl-C there and forward it to no one, so the
    # job trained on and every later job started. On the local provider: nothing here needs a pod.
    sweep = tmp_path / "sweep"
    cmd = [PYTHON, str(REPO / "run.py"), "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=1", "lora.r=4,8",
           "train.max_steps=100000", "train.logging_steps=1", f"hydra.sweep.dir={sweep}",
           f"registry.path={tmp_path / 'adapters'}"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=lorapod_env(), start_new_session=True)
    try:
        log = sweep / "0" / "train.log"
        wait_for(lambda: log.exists() and '"event": "step"' in log.read_text(errors="ignore"), 600,
                 "job 0 training")
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, out + err
    assert not (sweep / "1").exists(), "a job started after the Ctrl-C"
    job = summaries(sweep)["0"]
    assert job["status"] == "interrupted" and job["failed_stage"] == "train", job
    assert job["stages"]["terminate"]["status"] == "succeeded"
    assert len(table_lines(out, sweep)) == 1
