"""Seconds per training step: what this machine's own finished runs measured, else conf/plan/default.yaml's table.

A finished run records "throughput" in its run-summary.json (measured(), from result.json: the tokens it
trained and how fast, per GPU process). The planner takes the newest record of the same gpu option and model
option under plan.runs_dir (runs/ and runs/multirun/ alike) and turns its tokens/s into s/step at the planned
tokens per step, so a run with another batch size still benefits from it. Tokens per second carry over
between batch sizes better than seconds per step do; the spread (plan.spread_measured) covers the rest.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from engine.plan.memory import Shape

SCAN_LIMIT = 500  # newest summaries read at most: a years-old runs/ folder must not slow every run's start


@dataclass
class Rate:
    tokens_per_s: float  # per GPU process
    source: str  # where the number came from, as the plan prints it


def measured(cfg, result: dict | None) -> dict | None:
    """run-summary.json's "throughput" of a finished run: {gpu, model, s_per_step, steps, tokens_per_step,
    tokens_per_s, examples_per_step}; None when training did not finish or reported no rate."""
    if not result or result.get("status") != "succeeded":
        return None
    steps = int(result.get("steps") or 0)
    rate = (result.get("throughput") or {}).get("tokens_per_s")
    tokens = (result.get("throughput") or {}).get("trained_tokens")
    if steps <= 0 or not rate or not tokens:
        return None
    world = max(1, int(result.get("world_size") or 1))
    return {"gpu": cfg.gpu.name, "model": cfg.model.name, "device": (result.get("throughput") or {}).get("gpu"),
            "s_per_step": round(tokens / rate / steps, 4), "steps": steps,
            "tokens_per_step": round(tokens / steps, 1), "tokens_per_s": rate,
            "examples_per_step": int(cfg.train.batch_size) * int(cfg.train.grad_accum) * world}


def _summaries(runs_dir: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(runs_dir):
        dirs[:] = [d for d in dirs if d not in ("dataset", "adapter", "pod", "ssh", "export", ".hydra", "base_model")]
        if "run-summary.json" in files:
            found.append(Path(root) / "run-summary.json")
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return found[:SCAN_LIMIT]


def newest_measured(runs_dir: Path, gpu: str, model: str) -> tuple[dict, Path] | None:
    """The newest finished run's throughput record for this gpu and model option, and its summary file."""
    if not runs_dir.is_dir():
        return None
    for path in _summaries(runs_dir):
        try:
            record = json.loads(path.read_text(encoding="utf-8")).get("throughput")
        except (OSError, ValueError, AttributeError):
            continue  # a summary being written, or not ours: it measured nothing usable
        if isinstance(record, dict) and record.get("gpu") == gpu and record.get("model") == model \
                and (record.get("tokens_per_s") or 0) > 0:
            return record, path
    return None


def rate(cfg, gpu_name: str, runs_dir: Path) -> Rate | None:
    """Tokens per second per GPU process for cfg's model on one gpu option; None when no source knows."""
    model = str(cfg.model.name)
    found = newest_measured(runs_dir, gpu_name, model)
    if found:
        record, path = found
        where = path.parent.relative_to(runs_dir) if path.parent != runs_dir else path.parent
        return Rate(float(record["tokens_per_s"]), f"measured: {runs_dir / where}, {record['steps']} steps")
    table = (cfg.plan.tokens_per_s or {}).get(gpu_name) or {}
    if model in table:
        return Rate(float(table[model]), "table (a guess)")
    peak = (cfg.plan.peak_tflops or {}).get(gpu_name)
    shape = Shape.of(cfg.model)
    if peak and shape:
        return Rate(float(cfg.plan.mfu) * float(peak) * 1e12 / (6 * shape.params()),
                    f"MFU {cfg.plan.mfu:g} x {peak:g} TFLOPS / 6N (a guess)")
    return None
