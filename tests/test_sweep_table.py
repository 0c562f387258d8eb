"""The sweep's table and exit code: best first, failed/refused/interrupted last, printed once, also when a
Ctrl-C cut the sweep short (the basic launcher's job raises SystemExit in the sweep's own process)."""
from __future__ import annotations

import csv
import json
import signal
import subprocess
from pathlib import Path

from tests.conftest import PYTHON, REPO, lorapod_env, wait_for


def _job(sweep: Path, name: str, overrides: list[str], summary: dict | None, state: dict | None = None) -> None:
    folder = sweep / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if summary is not None:
        (folder / "run-summary.json").write_text(json.dumps(summary))
    if state is not None:
        (folder / "state.json").write_text(json.dumps(state))


def _summary(status: str, loss: float | None = None, actual: float | None = None, estimate: float = 0.0,
             adapter: dict | None = None, **extra) -> dict:
    return {"run_id": f"run-{status}-{loss}", "status": status, "error": None if status == "succeeded" else "why",
            "metrics": {"eval_loss_after": loss} if loss is not None else None, "cost_usd_actual": actual,
            "cost_usd_estimate": estimate, "adapter": adapter, **extra}


def test_best_first_failures_last_cost_says_which_and_exit_code_is_the_worst(tmp_path, capsys):
    from engine.sweep import summary

    sweep = tmp_path / "sweep"
    common = "provider.api_url=http://127.0.0.1:1/v2"
    _job(sweep, "0", [common, "lora.r=4"], _summary("succeeded", 2.5, actual=0.12,
                                                     adapter={"id": "a0", "status": "rejected"}))
    _job(sweep, "1", [common, "lora.r=8"], _summary("failed", exit_code=1))
    _job(sweep, "2", [common, "lora.r=16"], _summary("succeeded", 1.25, estimate=0.034,
                                                      adapter={"id": "a2", "status": "active"}))
    _job(sweep, "3", [common, "lora.r=32"], _summary("refused"))
    _job(sweep, "4", [common, "lora.r=64"], None, state={"run_id": "x", "status": "running"})
    (sweep / "datasets" / "abc").mkdir(parents=True)  # not a job: no .hydra/

    jobs = summary.report(sweep)
    out = capsys.readouterr().out
    assert [j.name for j in jobs][:2] == ["2", "0"] and {j.name for j in jobs[2:]} == {"1", "3", "4"}
    assert out.count(f"sweep {sweep}:") == 1
    first = out.splitlines()[0]
    assert first.startswith(f"sweep {sweep}: 5 job(s); best: job 2 (lora.r=16), eval loss 1.2500")
    assert common not in first and f"every job: {common}" in out
    assert "$0.1200 actual" in out and "$0.0340 estimate" in out
    rows = list(csv.DictReader((sweep / summary.CSV_NAME).open()))
    assert [(r["job"], r["status"]) for r in rows[:2]] == [("2", "succeeded"), ("0", "succeeded")]
    assert rows[0]["adapter_id"] == "a2" and rows[0]["gate"] == "active" and rows[0]["cost_kind"] == "estimate"
    assert {r["status"] for r in rows[2:]} == {"failed", "refused", "no summary (running)"}
    assert {j.name: j.exit_code for j in jobs} == {"0": 0, "1": 1, "2": 0, "3": 2, "4": 1}


def test_no_job_with_an_eval_loss_names_no_best(tmp_path, capsys):
    from engine.sweep import summary

    sweep = tmp_path / "sweep"
    _job(sweep, "0", ["lora.r=4"], _summary("interrupted"))
    summary.report(sweep)
    assert capsys.readouterr().out.splitlines()[0] == f"sweep {sweep}: 1 job(s), none finished with an eval loss: no best job"


def test_a_ctrl_c_in_a_basic_sweep_still_prints_the_table_of_what_ran(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [PYTHON, str(REPO / "run.py"), "-m", "train.max_steps=100000,3", "train.logging_steps=10",
           f"hydra.sweep.dir={sweep}", f"registry.path={tmp_path / 'adapters'}"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=lorapod_env(), start_new_session=True)
    try:
        log = sweep / "0" / "train.log"
        wait_for(lambda: log.exists() and '"event": "step"' in log.read_text(errors="ignore"), 600, "training")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, out + err
    assert out.count(f"sweep {sweep}:") == 1 and "no best job" in out
    rows = list(csv.DictReader((sweep / "sweep-summary.csv").open()))
    assert [(r["job"], r["status"]) for r in rows] == [("0", "interrupted")], "job 1 never started"


def test_the_final_check_deletes_a_pod_of_the_sweep_left_up_and_spares_a_detached_one(runpod_emulator, tmp_path,
                                                                                       monkeypatch, capsys):
    import httpx

    from engine.sweep import reaper, summary

    emu = runpod_emulator
    emu.faults.never_ready = True  # pods to list and delete: no sshd needed
    emu.faults.list_lag_s = 0
    monkeypatch.setenv("RUNPOD_API_KEY", emu.api_key)
    sweep = tmp_path / "sweep"

    def pod(name: str) -> str:
        body = {"name": name, "image": "x/y:z", "gpu": {"id": "NVIDIA GeForce RTX 4090", "count": 1},
                "ports": ["22/tcp"]}
        return httpx.post(f"{emu.url}/pods", json=body,
                          headers={"Authorization": f"Bearer {emu.api_key}"}).json()["id"]

    config = f"provider:\n  name: runpod\n  api_url: {emu.url}\n  api_key_env: RUNPOD_API_KEY\n"
    for name, status in (("0", "failed"), ("1", "detached")):
        _job(sweep, name, [f"lora.r={name}"], {**_summary(status), "run_id": f"sweep-run-{name}"})
        (sweep / name / ".hydra" / "config.yaml").write_text(config)
    left, detached, foreign = pod("lorapod-sweep-run-0"), pod("lorapod-sweep-run-1"), pod("lorapod-another-run")

    code = reaper.reap(summary.jobs(sweep), sweep)
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"pod {left} (lorapod-sweep-run-0) of job 0 (failed) was still up: deleted it" in out
    assert "job 1 is detached" in out
    assert {p.id for p in emu.live_pods()} == {detached, foreign}
    for pod_id in (detached, foreign):
        emu.terminate(pod_id)
