"""`run.py ... pipeline=plan` prints the plan with no API key; budget.max_usd refuses before any create."""
from __future__ import annotations

from tests.conftest import CPU_TRAIN, PYTHON, lorapod_env, run_lorapod


def test_pipeline_plan_prints_the_plan_without_an_api_key_and_exits_0(tmp_path, run_dir):
    env = lorapod_env()
    assert "RUNPOD_API_KEY" not in env
    run = run_lorapod("gpu=rtx5090", "model=qwen3_8b", "pipeline=plan", f"plan.runs_dir={tmp_path / 'runs'}",
                      run_dir=run_dir, env=env)
    assert run.proc.returncode == 0, run.output
    assert "plan: " in run.output and "rtx5090" in run.output and "rtx4090" in run.output
    plan = run.summary["plan"]
    assert [c["gpu"] for c in plan["candidates"]] == ["rtx5090", "rtx4090"]
    assert plan["fits"] is True and 0 < plan["usd_low"] < plan["usd_high"] and plan["max_price_per_hour"] == 0.74
    assert run.summary["pod"] is None and list(run.summary["stages"]) == ["prepare", "plan"]
    assert "plan: " in (run_dir / "run.log").read_text()
    # rtx5090's presets (8 x 1024 tokens a micro-batch) are tight on the 24 GB fallback: a warning, not a refusal
    assert plan["candidates"][1]["fits"] is False and "fallback gpu=rtx4090 may run out of memory" in run.output


def test_a_run_that_needs_the_api_key_still_asks_for_it(run_dir):
    run = run_lorapod("gpu=rtx5090", "model=qwen3_8b", run_dir=run_dir, env=lorapod_env())
    assert run.proc.returncode == 2 and "RUNPOD_API_KEY" in run.output, run.output


def test_a_plan_that_does_not_fit_exits_2_naming_the_settings(run_dir):
    run = run_lorapod("gpu=rtx4090", "model=qwen3_8b", "train.batch_size=32", "pipeline=plan", run_dir=run_dir,
                      env=lorapod_env())
    assert run.proc.returncode == 2, run.output
    assert "train.batch_size=32" in run.output and "train.max_seq_length=" in run.output and "gpu=" in run.output
    assert not (run_dir / "dataset").exists()  # refused at validation, before prepare


def test_over_budget_is_refused_before_any_create(runpod_emulator, tmp_path, run_dir):
    emu = runpod_emulator
    run = run_lorapod("gpu=rtx5090", f"provider.api_url={emu.url}", f"remote.workdir={tmp_path / 'pod-disk'}",
                      f"remote.python={PYTHON}", "build.skip=true", *CPU_TRAIN, "budget.max_usd=0.001",
                      f"plan.runs_dir={tmp_path / 'runs'}", run_dir=run_dir,
                      env=lorapod_env(RUNPOD_API_KEY=emu.api_key))
    assert run.proc.returncode == 2, run.output
    assert "budget.max_usd" in run.output and "$0.001" in run.output
    assert emu.pods == {} and not [r for r in emu.requests if r.method == "POST"], emu.requests
    summary = run.summary
    assert summary["failed_stage"] == "plan" and summary["plan"]["usd_high"] > 0.001
    assert summary["stages"]["deploy"]["status"] == "skipped"
