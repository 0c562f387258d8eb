"""Issue 14's budgets while running: against the RunPod emulator (real HTTP, real sshd pods, real training of the
tiny model) the pod's own deadline follows budget.max_usd, and a run whose spend reaches it is stopped, its pod
deleted, the run failed with the reason; a real 3-job sweep on the local provider refuses the job that
budget.sweep_max_usd has no room left for, before it rents anything.

The plan stage (issue 14 item 1) refuses a plan whose high estimate exceeds budget.max_usd from the prices in
conf; the emulator tests set prices the plan cannot see (the emulator's) and so run without it. The sweep runs
plan -> budget -> ledger together.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import PYTHON, REPO, Background, lorapod_env, run_lorapod
from tests.test_runpod_e2e import RTX5090, assert_nothing_billing_and_data_kept, canonical, env_for


def without_plan() -> tuple[str, ...]:
    stages = OmegaConf.load(REPO / "conf" / "pipeline" / "default.yaml").stages
    return ("~pipeline.stages.plan",) if "plan" in stages else ()


@pytest.fixture
def workdir(tmp_path) -> Path:
    return tmp_path / "pod-disk"


def test_the_pods_deadline_follows_the_budget(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    # $0.50 at $3.60/h (the dearest candidate: gpu.price_per_hour, above its fallback rtx4090's) buys 500 s
    run = run_lorapod(*canonical(emu, workdir, "train.max_steps=3", "gpu.price_per_hour=3.6", "budget.max_usd=0.5",
                                 "provider.billing_wait_s=0", *without_plan()), run_dir=run_dir, env=env_for(emu))
    assert run.proc.returncode == 0, run.output
    [pod] = emu.pods.values()
    assert pod.request["env"]["LORAPOD_MAX_RUNTIME_S"] == "500"
    line = run.summary["budget"]
    assert line["limit_usd"] == 0.5 and line["limit_source"] == "budget.max_usd"
    assert 0 < line["spent_usd"] < 0.5 and line["reached"] is None, line
    assert_nothing_billing_and_data_kept(emu, run)


def test_a_run_whose_spend_reaches_the_budget_is_stopped_and_its_pod_deleted(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    # The pod bills $18/h, half a cent a second: $1 lasts 200 s from the create, less 12 s held back for the fetch
    # and the delete (plan.fetch_minutes' high end), so the stop lands in training on any machine that reaches
    # training at all. lorapod's conf still says $0.74/h, so only the pod's own price can stop it.
    next(offer for offer in emu.catalog if offer.id == RTX5090).community_price = 18.0
    with Background(*canonical(emu, workdir, "train.max_steps=100000", "train.logging_steps=20", "budget.max_usd=1",
                               "plan.fetch_minutes=[0.1,0.2]", "provider.billing_wait_s=0", *without_plan()),
                    run_dir=run_dir, env=env_for(emu)) as bg:
        run = bg.finish(timeout=600)
    assert run.proc.returncode == 1, run.output
    summary = run.summary
    assert summary["status"] == "failed", summary  # failed, not interrupted: a sweep goes on
    assert summary["error"].startswith("budget.max_usd $1.0000 reached after "), summary["error"]
    assert "less $0.0600 kept for the fetch and the delete" in summary["error"], summary["error"]
    assert summary["failed_stage"] == "train", summary["failed_stage"]  # the follower's SSH exec, interrupted
    assert '"event": "step"' in (run_dir / "train.log").read_text()
    assert summary["stages"]["terminate"]["status"] == "succeeded" and summary["pod"]["terminated"] is True
    assert any(r.method == "DELETE" and r.key == "account" for r in emu.requests), "lorapod itself deleted the pod"
    assert "budget.max_usd $1.0000 reached" in (run_dir / "run.log").read_text()
    line = summary["budget"]
    assert line["reached"] == summary["error"].split("\n")[0] and line["spent_usd"] > 0 and line["source"], line
    assert_nothing_billing_and_data_kept(emu, run)


def test_a_sweep_refuses_the_job_its_budget_has_no_room_left_for(tmp_path):
    """Three jobs, one after another, on this machine at a fake $360/h (a dime a second), the plan stage included:
    its prices are the budget's (gpu.price_per_hour, for the local provider too), and told that training is
    instant it reserves about $3.20 a job (its high estimate), the limit each job is stopped at. After two of
    them less than that is left of the sweep's $8, so the third is refused before it rents anything."""
    sweep = tmp_path / "sweep"
    cmd = [PYTHON, str(REPO / "run.py"), "-m", "lora.r=4,8,16", "train.max_steps=100000", "train.logging_steps=20",
           "gpu.price_per_hour=360", "budget.max_usd=20", "budget.sweep_max_usd=8",
           "plan.tokens_per_s.cpu.tiny=1e9", "plan.load_minutes=[0,0.01]", "plan.fetch_minutes=[0,0.01]",
           f"plan.runs_dir={tmp_path / 'runs'}", f"hydra.sweep.dir={sweep}", f"registry.path={tmp_path / 'adapters'}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=lorapod_env(), timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    summaries = [json.loads((sweep / job / "run-summary.json").read_text()) for job in ("0", "1", "2")]
    assert [s["status"] for s in summaries] == ["failed", "failed", "refused"], output
    reserved = summaries[0]["plan"]["usd_high"]
    assert 3 < reserved < 4, summaries[0]["plan"]
    for s in summaries[:2]:
        assert s["budget"]["reserved_usd"] == reserved and s["budget"]["limit_usd"] == reserved, s["budget"]
        assert s["error"].startswith(f"this job's share of budget.sweep_max_usd ${reserved:.4f} reached"), s["error"]
    refused = summaries[2]
    assert refused["failed_stage"] == "budget" and refused["pod"] is None
    assert refused["stages"]["deploy"]["status"] == "skipped"
    assert "refused before renting" in refused["error"] and "left $" in refused["error"]
    assert refused["budget"]["spent_usd"] == 0.0
    ledger = json.loads((sweep / "budget-ledger.json").read_text())
    assert ledger["sweep_max_usd"] == 8.0
    assert [ledger["jobs"][j]["status"] for j in ("0", "1", "2")] == ["settled", "settled", "refused"]
    spent = [ledger["jobs"][j]["spent_usd"] for j in ("0", "1")]
    assert spent == [s["budget"]["spent_usd"] for s in summaries[:2]]
    assert all(reserved - 0.5 <= usd for usd in spent) and sum(spent) <= 8, spent
