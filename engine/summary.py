"""run-summary.json: how the run ended, what each stage took, what the pod cost, where the results are."""
from __future__ import annotations

import json
from pathlib import Path

from engine.context import RunContext
from engine.plan.throughput import measured


def billed_seconds(ctx: RunContext) -> float | None:
    marks = ctx.state.marks
    if "pod_created" not in marks:
        return None
    end = marks.get("pod_terminated") or ctx.state.ended_at
    return round(end - marks["pod_created"], 3) if end else None


def build(ctx: RunContext) -> dict:
    state = ctx.state
    failed = [n for n, r in state.stages.items() if r.status in ("failed", "interrupted")]
    seconds = billed_seconds(ctx)
    price = (state.pod or {}).get("price_per_hour") or 0.0
    adapter = ctx.run_dir / "adapter"
    result = state.outputs.get("result") or {}
    return {
        "run_id": state.run_id,
        "status": state.status,
        "exit_code": state.outputs.get("exit_code"),  # 0 succeeded, 1 failed, 2 bad config or data, 130 interrupted
        "failed_stage": failed[0] if failed else None,
        "error": next((state.stages[n].error for n in failed), None),
        "seconds": round((state.ended_at or 0) - state.started_at, 3) if state.ended_at else None,
        "stages": {n: {"status": r.status, "seconds": r.seconds} for n, r in state.stages.items()},
        "pod": state.pod,
        "image": state.outputs.get("image"),  # the reference deployed, and its digest when the registry named one
        "billed_seconds": seconds,
        "cost_usd_estimate": round(seconds / 3600 * price, 4) if seconds else 0.0,
        # What the provider billed (stages/cost.py): null when it is not known (yet): see cost.note
        "cost_usd_actual": (state.outputs.get("cost") or {}).get("actual_usd"),
        "cost": state.outputs.get("cost"),  # {actual_usd, source, note}
        # stages/budget.py: {limit_usd, limit_source, spent_usd, source, reached, and in a sweep ledger, job, reserved_usd}
        "budget": state.outputs.get("budget"),
        "overhead": state.outputs.get("overhead"),
        "deadline": state.outputs.get("deadline"),  # the pod's watchdog: armed, with which credential and ways
        # pinned_from_log | first_contact | known_hosts; host_key_warning: why keys the image should have
        # announced were not found, when they were not
        "host_key": (state.outputs.get("host_key") or {}).get("mode"),
        "host_key_warning": (state.outputs.get("host_key") or {}).get("host_keys_missing"),
        # python -m engine.attach: one {at, host, pid, previous_status, from_stage, command} per attach, oldest first
        "attach": state.outputs.get("attach"),
        "plan": state.outputs.get("plan"),  # stages/plan.py: minutes and dollars per GPU candidate, memory fit
        # What this run's training measured (s/step, tokens/step per GPU process): the next plan of the same gpu and
        # model reads it from here (engine/plan/throughput.py)
        "throughput": measured(ctx.cfg, result) if result else None,
        "preflight": state.outputs.get("preflight"),  # pipeline=preflight: one {check, status, detail} per line
        "adapter": state.outputs.get("adapter"),  # register: {id, status (active/rejected), reason, registry}
        "export": state.outputs.get("export"),  # export.ollama: the Modelfile, its FROM and ADAPTER, the Ollama name
        "install": state.outputs.get("install"),  # export.metahuman: {id, path} of the adapter put into MetaHuman OS
        "metrics": {k: result.get(k) for k in ("train_loss", "eval_loss_before", "eval_loss_after", "steps")}
        if result else None,
        "paths": {
            "run_dir": str(ctx.run_dir),
            "dataset": str(ctx.dataset_dir) if ctx.dataset_dir.exists() else None,
            "adapter": str(adapter) if (adapter / "adapter_config.json").exists() else None,
            "log": str(ctx.run_dir / "run.log"),
            "plot": state.outputs.get("plot"),  # the loss curve (stages/plot.py), when the run got that far
        },
    }


def write(ctx: RunContext) -> dict:
    summary = build(ctx)
    path: Path = ctx.run_dir / "run-summary.json"
    path.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return summary

